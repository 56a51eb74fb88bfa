import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, killPidFile, launchBroker, stopBroker, type BrokerProcess } from "./process.ts";
import type { StartedBroker } from "./types.ts";

declare module "vitest" {
  export interface ProvidedContext {
    /** URL of the harness's NATS server (JetStream on, file store in its own directory). */
    natsUrl: string;
    /** JSON array: the command line that started it (`[binary, ...args]`), to restart it the same way. */
    natsArgv: string;
    /** File holding the pid of the running server (rewritten by the server when restarted). */
    natsPidFile: string;
  }
}

/** A NATS server with JetStream, on its own port and store directory. */
export interface NatsServer {
  readonly url: string;
  readonly port: number;
  readonly storeDir: string;
  readonly pidFile: string;
  readonly process: BrokerProcess;
  /** Stops the server and removes its directory. */
  stop(): Promise<void>;
}

/**
 * Launches `nats-server -js` on a free port with a fresh store directory.
 * @throws Error saying how to install nats-server when it is missing.
 */
export async function launchNats(): Promise<NatsServer> {
  const port = await freePort();
  const storeDir = await mkdtemp(join(tmpdir(), "nuropb-nats-"));
  const pidFile = join(storeDir, "nats.pid");
  try {
    const proc = await launchBroker({
      name: "NATS",
      command: "nats-server",
      args: ["-js", "-sd", storeDir, "-a", "127.0.0.1", "-p", String(port), "-P", pidFile],
      readyLine: /Server is ready/,
      installHint: "apt-get install -y nats-server",
    });
    return {
      url: `nats://127.0.0.1:${port}`,
      port,
      storeDir,
      pidFile,
      process: proc,
      async stop() {
        await stopBroker(proc);
        await killPidFile(pidFile, storeDir);
        await rm(storeDir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await rm(storeDir, { recursive: true, force: true });
    throw err;
  }
}

/** The harness's NATS server for the whole integration run. */
export async function startNats(): Promise<StartedBroker> {
  const server = await launchNats();
  return {
    provide: {
      natsUrl: server.url,
      natsArgv: JSON.stringify(server.process.argv),
      natsPidFile: server.pidFile,
    },
    stop: () => server.stop(),
  };
}

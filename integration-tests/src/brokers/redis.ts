import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
// The generic process launcher lives beside the NATS harness (the first broker written).
import { freePort, killPidFile, launchBroker, stopBroker, type BrokerProcess } from "./process.ts";
import type { StartedBroker } from "./types.ts";

declare module "vitest" {
  export interface ProvidedContext {
    /** URL of the harness's Redis server (no persistence). */
    redisUrl: string;
    /** JSON array: the command line that started it (`[binary, ...args]`), to restart it the same way. */
    redisArgv: string;
    /** File holding the pid of the running server. */
    redisPidFile: string;
  }
}

/** A Redis server on its own port and directory. */
export interface RedisServer {
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  readonly pidFile: string;
  readonly process: BrokerProcess;
  /** Stops the server and removes its directory. */
  stop(): Promise<void>;
}

/** Options of {@link launchRedis}. */
export interface LaunchRedisOptions {
  /**
   * Keep data across a restart: append-only file, fsync on every write (a test that kills the
   * server and counts messages needs it). Default false: `--save '' --appendonly no`, as the
   * shared harness runs.
   */
  readonly persistent?: boolean;
}

/**
 * Launches `redis-server` on a free port with a fresh directory.
 * @throws Error saying how to install redis-server when it is missing.
 */
export async function launchRedis(options: LaunchRedisOptions = {}): Promise<RedisServer> {
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), "nuropb-redis-"));
  const pidFile = join(dir, "redis.pid");
  const persistence = options.persistent
    ? ["--appendonly", "yes", "--appendfsync", "always"]
    : ["--appendonly", "no"];
  try {
    const proc = await launchBroker({
      name: "Redis",
      command: "redis-server",
      args: [
        "--port",
        String(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        ...persistence,
        "--dir",
        dir,
        "--pidfile",
        pidFile,
        "--daemonize",
        "no",
      ],
      readyLine: /Ready to accept connections/,
      installHint: "apt-get install -y redis-server",
    });
    return {
      url: `redis://127.0.0.1:${port}`,
      port,
      dir,
      pidFile,
      process: proc,
      async stop() {
        await stopBroker(proc);
        await killPidFile(pidFile, dir);
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** The harness's Redis server for the whole integration run. */
export async function startRedis(): Promise<StartedBroker> {
  const server = await launchRedis();
  return {
    provide: {
      redisUrl: server.url,
      redisArgv: JSON.stringify(server.process.argv),
      redisPidFile: server.pidFile,
    },
    stop: () => server.stop(),
  };
}

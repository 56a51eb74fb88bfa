/**
 * server: the `sandbox` service with a key file, per-method authorisation and end-to-end
 * encryption.
 *
 * On the in-memory transport (the default) it also starts a demo client, shows an authorised, a
 * refused and an encrypted call, and exits. With NUROPB_AMQP_URL set it serves on RabbitMQ until
 * Ctrl-C; run the client example against it.
 */
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient, createService } from "@nuropb/core";
import { loadOrCreateKeyFile } from "@nuropb/crypto";
import { configureMesh, createAmqpTransport, obfuscateUrl } from "@nuropb/transport-amqp";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import { DEMO_TOKEN, SERVICE_NAME, SandboxService } from "./sandbox-service.ts";
import {
  amqpUrlOf,
  createPrinter,
  runIfMain,
  untilStopped,
  type MainOptions as SharedOptions,
} from "@nuropb-examples/shared";

/** Options of {@link main}; the defaults are what `npm start` uses. */
export interface MainOptions extends SharedOptions {
  /**
   * The service's key file, created on first use. Every instance of a service must share it.
   * @defaultValue process.env.NUROPB_KEY_FILE, else `nuropb-example-sandbox.keys.json` in the OS temp dir
   */
  readonly keyFile?: string;
}

/** Runs the example and returns the lines it printed. */
export async function main(options: MainOptions = {}): Promise<string[]> {
  const { lines, print } = createPrinter(options);
  const url = amqpUrlOf(options);
  const keyFile =
    options.keyFile ??
    process.env.NUROPB_KEY_FILE ??
    join(tmpdir(), "nuropb-example-sandbox.keys.json");
  const keys = await loadOrCreateKeyFile(keyFile);
  const instance = new SandboxService((e) =>
    print(`${SERVICE_NAME} received event ${e.topic}: ${JSON.stringify(e.event)}`),
  );

  if (url !== "") {
    await configureMesh({ url }); // idempotent: exchanges and the vhost, if missing
    const transport = createAmqpTransport({ url });
    const service = createService({
      transport,
      name: SERVICE_NAME,
      instance,
      keys,
      eventBindings: ["test-event"],
    });
    await service.connect();
    print(`${SERVICE_NAME} ready on ${obfuscateUrl(url)} (keys: ${keyFile}), Ctrl-C to stop`);
    await untilStopped(options.signal);
    await service.disconnect(); // finishes the calls in progress first
    await transport.close();
    print(`${SERVICE_NAME} stopped`);
    return lines;
  }

  const hub = createMemoryHub();
  const service = createService({
    transport: createMemoryTransport({ hub }),
    name: SERVICE_NAME,
    instance,
    keys,
    eventBindings: ["test-event"],
  });
  const client = createClient({ transport: createMemoryTransport({ hub }) });
  await service.connect();
  await client.connect();
  print(`${SERVICE_NAME} ready on the memory transport (keys: ${keyFile})`);
  const show = async (label: string, call: Promise<unknown>): Promise<void> => {
    try {
      print(`${label} -> ${JSON.stringify(await call)}`);
    } catch (err) {
      print(`${label} -> ${(err as Error).name}: ${(err as Error).message}`);
    }
  };
  try {
    const auth = { Authorization: DEMO_TOKEN };
    await show("get_account", client.request(SERVICE_NAME, "get_account", {}, auth));
    await show("get_account without a token", client.request(SERVICE_NAME, "get_account"));
    await show(
      "save_secret in plaintext",
      client.request(SERVICE_NAME, "save_secret", { note: "hi" }, auth, { encrypted: false }),
    );
    await show(
      "save_secret encrypted",
      client.request(SERVICE_NAME, "save_secret", { note: "hi" }, auth, { encrypted: true }),
    );
  } finally {
    await client.disconnect();
    await service.disconnect();
  }
  return lines;
}

runIfMain(import.meta.url, () => main());

/**
 * client: a request, a command, an event and an encrypted request against the `sandbox` service
 * of the server example.
 *
 * On the in-memory transport (the default) there is no other process to talk to, so it starts the
 * server example's service in-process. With NUROPB_AMQP_URL set it talks to the server example
 * running elsewhere: start `npm start -w @nuropb-examples/server` first, with the same URL.
 */
import { createClient, createService, type MeshService } from "@nuropb/core";
import { createServiceKeys } from "@nuropb/crypto";
import type { Transport } from "@nuropb/protocol";
import { createAmqpTransport, obfuscateUrl } from "@nuropb/transport-amqp";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
// The server example's service, for the in-memory run only.
import {
  DEMO_TOKEN,
  SERVICE_NAME,
  SandboxService,
  type ReceivedEvent,
} from "../../server/src/sandbox-service.ts";
import { createPrinter, amqpUrlOf, runIfMain, type MainOptions } from "@nuropb-examples/shared";

export type { MainOptions };

/** Runs the example and returns the lines it printed. */
export async function main(options: MainOptions = {}): Promise<string[]> {
  const { lines, print } = createPrinter(options);
  const url = amqpUrlOf(options);

  // On memory, the sandbox service runs here too; `eventArrived` lets us wait for its handler.
  let sandbox: MeshService | undefined;
  let eventArrived: Promise<ReceivedEvent> | undefined;
  let transport: Transport;
  if (url !== "") {
    transport = createAmqpTransport({ url });
    print(`client on ${obfuscateUrl(url)}`);
  } else {
    const hub = createMemoryHub();
    transport = createMemoryTransport({ hub });
    let received = (_event: ReceivedEvent): void => {};
    eventArrived = new Promise((resolve) => (received = resolve));
    sandbox = createService({
      transport: createMemoryTransport({ hub }),
      name: SERVICE_NAME,
      instance: new SandboxService((event) => received(event)),
      keys: createServiceKeys(),
      eventBindings: ["test-event"],
    });
    await sandbox.connect();
    print("client on the memory transport, with the sandbox service in-process");
  }

  const client = createClient({ transport });
  await client.connect();
  try {
    // Request: waits for the result (or throws the service's error).
    const reply = await client.request(
      SERVICE_NAME,
      "test_method",
      { param1: "value1" },
      { context1: "value1" },
      { ttlMs: 5_000 },
    );
    print(`request test_method -> ${JSON.stringify(reply)}`);

    // Command: fire and forget; resolves once the broker has it.
    await client.command(SERVICE_NAME, "record_visit", { page: "/home" });
    print("command record_visit sent");
    const visits = await client.request(SERVICE_NAME, "visit_count");
    print(`request visit_count -> ${JSON.stringify(visits)}`);

    // Event: every service bound to the topic gets it.
    await client.publishEvent("test-event", { event_key: "event_value" }, { context1: "value1" });
    print("event test-event published");
    if (eventArrived !== undefined) {
      const e = await eventArrived;
      print(`${SERVICE_NAME} received event ${e.topic}: ${JSON.stringify(e.event)}`);
    }

    // Encrypted request: the client fetches the service's public key (describe) and seals the call.
    const saved = await client.request(
      SERVICE_NAME,
      "save_secret",
      { note: "meet at noon" },
      { Authorization: DEMO_TOKEN },
      { encrypted: true },
    );
    print(`encrypted request save_secret -> ${JSON.stringify(saved)}`);
  } finally {
    await client.disconnect();
    await sandbox?.disconnect();
    await transport.close();
  }
  return lines;
}

runIfMain(import.meta.url, () => main());

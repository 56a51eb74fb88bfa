/**
 * service-example: what a service's methods can do — sync and async results, exceptions, NuroPb
 * errors, success with events, call again — and an event handler.
 *
 * On the in-memory transport (the default) a demo client calls every method and prints what comes
 * back, then it exits. With NUROPB_AMQP_URL set it serves on RabbitMQ until Ctrl-C.
 */
import { createClient, createService } from "@nuropb/core";
import { configureMesh, createAmqpTransport, obfuscateUrl } from "@nuropb/transport-amqp";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import { ServiceExample, type ExampleEvent } from "./service-example.ts";
import {
  createPrinter,
  amqpUrlOf,
  untilStopped,
  runIfMain,
  type MainOptions,
} from "@nuropb-examples/shared";

export type { MainOptions };

/** The service name on the mesh. */
export const SERVICE_NAME = "service-example";

/** Runs the example and returns the lines it printed. */
export async function main(options: MainOptions = {}): Promise<string[]> {
  const { lines, print } = createPrinter(options);
  const url = amqpUrlOf(options);
  const eventLine = (e: ExampleEvent): string =>
    `handleEvent <- ${e.topic} ${JSON.stringify(e.event)}`;
  let onEvent = (event: ExampleEvent): void => print(eventLine(event));
  const instance = new ServiceExample(SERVICE_NAME, (event) => onEvent(event));
  const serviceOptions = { name: SERVICE_NAME, instance, eventBindings: ["test-event"] };

  if (url !== "") {
    await configureMesh({ url }); // idempotent: exchanges and the vhost, if missing
    const transport = createAmqpTransport({ url });
    const service = createService({ transport, ...serviceOptions });
    await service.connect();
    print(`${SERVICE_NAME} ready on ${obfuscateUrl(url)}, Ctrl-C to stop`);
    await untilStopped(options.signal);
    await service.disconnect(); // finishes the calls in progress first
    await transport.close();
    print(`${SERVICE_NAME} stopped`);
    return lines;
  }

  const hub = createMemoryHub();
  const service = createService({ transport: createMemoryTransport({ hub }), ...serviceOptions });
  const client = createClient({ transport: createMemoryTransport({ hub }) });
  await service.connect();
  await client.connect();
  print(`${SERVICE_NAME} ready on the memory transport`);

  /** Calls a method and prints its result or error; `withEvent`: then the event it raised. */
  const call = async (method: string, withEvent = false): Promise<void> => {
    const event = new Promise<ExampleEvent>((resolve) => (onEvent = resolve));
    try {
      print(`${method} -> ${JSON.stringify(await client.request(SERVICE_NAME, method))}`);
    } catch (err) {
      print(`${method} -> ${(err as Error).name}: ${(err as Error).message}`);
    }
    if (withEvent) print(eventLine(await event)); // published after the response
  };
  try {
    await call("test_method");
    await call("test_async_method");
    await call("sync_method");
    await call("async_method");
    await call("method_with_exception");
    await call("async_method_with_exception");
    await call("method_with_nuropb_exception");
    await call("success_with_events", true);
    await call("add_event", true);
    await call("call_again");
    await call("call_again_always");
  } finally {
    await client.disconnect();
    await service.disconnect();
  }
  return lines;
}

runIfMain(import.meta.url, () => main());

/**
 * server-basic: the smallest NuroPb service.
 *
 * On the in-memory transport (the default) it also starts a demo client, calls the service and
 * exits. With NUROPB_AMQP_URL set (e.g. amqp://guest:guest@localhost:5672/nuropb-example) it
 * serves on RabbitMQ until Ctrl-C.
 */
import { createClient, createService } from "@nuropb/core";
import { configureMesh, createAmqpTransport, obfuscateUrl } from "@nuropb/transport-amqp";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import {
  createPrinter,
  amqpUrlOf,
  untilStopped,
  runIfMain,
  type MainOptions,
} from "@nuropb-examples/shared";

export type { MainOptions };

/** The service. Every public method is on the mesh as `basic-example.<method>`. */
export class BasicExampleService {
  test_method(params: { param1: string; param2: Record<string, unknown> }) {
    return { param1: params.param1, param2: params.param2, reply: "response from test_method" };
  }

  async test_async_method(): Promise<string> {
    await new Promise((resolve) => setTimeout(resolve, 10)); // some asynchronous work
    return "response from test_async_method";
  }
}

/** Runs the example and returns the lines it printed. */
export async function main(options: MainOptions = {}): Promise<string[]> {
  const { lines, print } = createPrinter(options);
  const url = amqpUrlOf(options);

  if (url !== "") {
    await configureMesh({ url }); // idempotent: exchanges and the vhost, if missing
    const transport = createAmqpTransport({ url });
    const service = createService({
      transport,
      name: "basic-example",
      instance: new BasicExampleService(),
    });
    await service.connect();
    print(`basic-example ready on ${obfuscateUrl(url)}, Ctrl-C to stop`);
    await untilStopped(options.signal);
    await service.disconnect(); // finishes the calls in progress first
    await transport.close();
    print("basic-example stopped");
    return lines;
  }

  const hub = createMemoryHub();
  const service = createService({
    transport: createMemoryTransport({ hub }),
    name: "basic-example",
    instance: new BasicExampleService(),
  });
  const client = createClient({ transport: createMemoryTransport({ hub }) });
  await service.connect();
  await client.connect();
  print("basic-example ready on the memory transport");
  try {
    const reply = await client.request("basic-example", "test_method", {
      param1: "value1",
      param2: { param2a: "value2a" },
    });
    print(`test_method -> ${JSON.stringify(reply)}`);
    const asyncReply = await client.request("basic-example", "test_async_method");
    print(`test_async_method -> ${JSON.stringify(asyncReply)}`);
  } finally {
    await client.disconnect();
    await service.disconnect();
  }
  return lines;
}

runIfMain(import.meta.url, () => main());

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

/** Options of {@link main}; the defaults are what `npm start` uses. */
export interface MainOptions {
  /** Receives each line the example prints. @defaultValue console.log */
  readonly print?: (line: string) => void;
  /** RabbitMQ URL; empty means the memory transport. @defaultValue process.env.NUROPB_AMQP_URL */
  readonly amqpUrl?: string;
  /** Stops a service running on RabbitMQ, as SIGINT and SIGTERM do. */
  readonly signal?: AbortSignal;
}

/** Runs the example and returns the lines it printed. */
export async function main(options: MainOptions = {}): Promise<string[]> {
  const lines: string[] = [];
  const print = (line: string): void => {
    lines.push(line);
    (options.print ?? console.log)(line);
  };
  const url = options.amqpUrl ?? process.env.NUROPB_AMQP_URL ?? "";

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

/** Resolves on SIGINT, SIGTERM or when `signal` aborts. */
function untilStopped(signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const stop = (): void => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      signal?.removeEventListener("abort", stop);
      resolve();
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
    if (signal?.aborted === true) stop();
    else signal?.addEventListener("abort", stop);
  });
}

if (import.meta.url === `file://${process.argv[1] ?? ""}`) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}

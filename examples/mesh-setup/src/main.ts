/**
 * mesh-setup: prepares a RabbitMQ mesh for NuroPb services — the vhost (through the management
 * API), the rpc, events and dead-letter exchanges and the dead-letter queue. Idempotent: run it
 * before services start, as often as you like; what exists is left alone.
 *
 * Set NUROPB_AMQP_URL (e.g. amqp://guest:guest@localhost:5672/nuropb-example); the management API
 * is found at the AMQP port + 10000. On the in-memory transport there is nothing to set up.
 */
import { configureMesh, obfuscateUrl } from "@nuropb/transport-amqp";
import { createPrinter, amqpUrlOf, type MainOptions } from "@nuropb-examples/shared";

export type { MainOptions };

/** Runs the example and returns the lines it printed. */
export async function main(options: MainOptions = {}): Promise<string[]> {
  const { lines, print } = createPrinter(options);
  const url = amqpUrlOf(options);

  if (url === "") {
    print(
      "memory transport: nothing to set up, queues and bindings exist as soon as they are used",
    );
    print("set NUROPB_AMQP_URL=amqp://user:password@host:5672/vhost to set up a RabbitMQ mesh");
    return lines;
  }

  print(`setting up the mesh at ${obfuscateUrl(url)}`);
  const result = await configureMesh({ url });
  print(`vhost ${result.vhost}: ${result.vhostCreated ? "created" : "already there"}`);
  print(`declared: ${result.declared.length > 0 ? result.declared.join(", ") : "nothing"}`);
  print(`already there: ${result.existing.length > 0 ? result.existing.join(", ") : "nothing"}`);
  return lines;
}

if (import.meta.url === `file://${process.argv[1] ?? ""}`) {
  main().catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exitCode = 1;
  });
}

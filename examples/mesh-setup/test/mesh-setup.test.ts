import { expect, it } from "vitest";
import { main } from "../src/main.ts";

it("explains that the memory transport needs no setup", async () => {
  const lines = await main({ print: () => {}, amqpUrl: "" });
  expect(lines).toEqual([
    "memory transport: nothing to set up, queues and bindings exist as soon as they are used",
    "set NUROPB_AMQP_URL=amqp://user:password@host:5672/vhost to set up a RabbitMQ mesh",
  ]);
});

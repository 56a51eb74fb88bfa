import { topicMatches } from "@nuropb/protocol";
import amqp from "amqplib";
import fc from "fast-check";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createTestMesh } from "../src/amqp-helpers.ts";
import type { TestMesh } from "../src/amqp-helpers.ts";

// The memory, NATS and Redis transports route events with `topicMatches` (or its Lua twin, which
// redis-behaviour checks against it). Here RabbitMQ's own topic exchange is the oracle: every
// pattern is bound to a queue, every topic published once, and what each queue received must be
// exactly the topics `topicMatches` accepts, including the empty topic and empty words.

let mesh: TestMesh;
beforeAll(async () => {
  mesh = await createTestMesh("topic-oracle");
});
afterAll(async () => {
  await mesh.teardown();
});

const FIXED_PATTERNS = ["*", "#", "a", "*.*", "a.#", "#.a", "a.*.b", "a.#.b", "*.#.*", "#.#"];
const FIXED_TOPICS = ["", "a", "b", "a.b", "a..b", "a.a.b", "b.a", "a.b.c", ".a", "a."];

it("RabbitMQ routes each topic to exactly the patterns topicMatches accepts", async () => {
  const word = fc.constantFrom("a", "b", "c", "");
  const patterns = [
    ...new Set([
      ...FIXED_PATTERNS,
      ...fc.sample(
        fc
          .array(fc.oneof(fc.constantFrom("a", "b"), fc.constant("*"), fc.constant("#")), {
            minLength: 1,
            maxLength: 4,
          })
          .map((w) => w.join(".")),
        { seed: 11, numRuns: 40 },
      ),
    ]),
  ];
  const topics = [
    ...new Set([
      ...FIXED_TOPICS,
      ...fc.sample(
        fc.array(word, { minLength: 0, maxLength: 4 }).map((w) => w.join(".")),
        { seed: 12, numRuns: 80 },
      ),
    ]),
  ];

  const conn = await amqp.connect(mesh.url);
  try {
    const ch = await conn.createConfirmChannel();
    const exchange = "topic-oracle";
    await ch.assertExchange(exchange, "topic", { durable: false, autoDelete: true });
    const queues: string[] = [];
    for (const pattern of patterns) {
      const { queue } = await ch.assertQueue("", { exclusive: true });
      await ch.bindQueue(queue, exchange, pattern);
      queues.push(queue);
    }
    for (const topic of topics) ch.publish(exchange, topic, Buffer.from(topic, "utf8"));
    await ch.waitForConfirms();

    const mismatches: string[] = [];
    for (const [i, pattern] of patterns.entries()) {
      const routed: string[] = [];
      for (;;) {
        const msg = await ch.get(queues[i] ?? "", { noAck: true });
        if (msg === false) break;
        routed.push(msg.content.toString("utf8"));
      }
      const expected = topics.filter((t) => topicMatches(pattern, t));
      if (JSON.stringify(routed.sort()) !== JSON.stringify(expected.sort())) {
        mismatches.push(
          `${JSON.stringify(pattern)}: RabbitMQ ${JSON.stringify(routed)}, topicMatches ${JSON.stringify(expected)}`,
        );
      }
    }
    expect(mismatches).toEqual([]);
    expect(patterns.length).toBeGreaterThan(20);
    expect(topics).toContain("");
  } finally {
    await conn.close();
  }
});

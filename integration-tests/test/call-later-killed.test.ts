import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createService, type AnswerContext, type MeshService } from "@nuropb/core";
import { createDeferred, newId, type Transport } from "@nuropb/protocol";
import { configureMesh, createAmqpTransport, teardownMesh } from "@nuropb/transport-amqp";
import { createNatsTransport } from "@nuropb/transport-nats";
import { createRedisTransport } from "@nuropb/transport-redis";
import { waitFor } from "@nuropb/transport-testkit";
import { rabbitEnv, uniqueVhost } from "../src/amqp-helpers.ts";
import { launchNats } from "../src/brokers/nats.ts";
import { launchRedis } from "../src/brokers/redis.ts";
import { spawnTs } from "../src/cli-harness.ts";

// Issue #21 / review finding 10: the calling instance is a process of its own, KILLED (SIGKILL,
// no disconnect) between its asynchronous call and the answer, or while handling the answer;
// another instance of the calling service handles the answer.

const T = 90_000;
const FIXTURE = "integration-tests/test/fixtures/call-later-caller.ts";
const vhost = uniqueVhost("killed");
const amqpUrl = `${rabbitEnv().amqpUrl}/${vhost}`;
const nats = await launchNats();
const redis = await launchRedis();
const mesh = `kl${newId().slice(0, 10)}`;

beforeAll(async () => {
  await configureMesh({ url: amqpUrl });
}, T);
afterAll(async () => {
  await teardownMesh({ url: amqpUrl });
  await Promise.allSettled([nats.stop(), redis.stop()]);
}, T);

interface Target {
  readonly kind: "amqp" | "nats" | "redis";
  readonly url: string;
  readonly make: () => Transport;
}

const targets: Target[] = [
  { kind: "amqp", url: amqpUrl, make: () => createAmqpTransport({ url: amqpUrl }) },
  { kind: "nats", url: nats.url, make: () => createNatsTransport({ servers: nats.url, mesh }) },
  { kind: "redis", url: redis.url, make: () => createRedisTransport({ url: redis.url, mesh }) },
];

/** An answer as the surviving instance saw it. */
interface Seen {
  readonly callId: string;
  readonly state: unknown;
  readonly redelivered: boolean;
  readonly result: unknown;
}

async function start<T extends object>(svc: MeshService<T>, stop: (() => Promise<void>)[]) {
  await svc.connect();
  stop.push(() => svc.disconnect());
  return svc;
}

for (const target of targets) {
  describe(`callLater with the calling instance killed: ${target.kind}`, () => {
    it(
      "another instance handles the answer when the caller was killed between call and answer",
      async () => {
        const stop: (() => Promise<void>)[] = [];
        const callee = `pay${newId().slice(0, 8)}`;
        const caller = `ord${newId().slice(0, 8)}`;
        const gate = createDeferred<void>();
        let calls = 0;
        try {
          await start(
            createService({
              name: callee,
              instance: {
                async charge(p: { amount: number }) {
                  calls++;
                  await gate.promise;
                  return { receipt: `r-${String(p.amount)}` };
                },
              },
              transport: target.make(),
            }),
            stop,
          );
          const child = spawnTs(FIXTURE, [], {
            TRANSPORT: target.kind,
            URL: target.url,
            MESH: mesh,
            SERVICE: caller,
            CALLEE: callee,
          });
          await child.stdoutContains("sent ", 60_000);
          await waitFor(() => calls === 1, 30_000, "the call to reach the callee");
          child.kill("SIGKILL");
          const exit = await child.done;
          expect(exit.code).toBe(137);
          const callId = /sent (\S+)/.exec(exit.stdout)?.[1];

          const seen: Seen[] = [];
          await start(
            createService({
              name: caller,
              instance: {
                paid(result: unknown, ctx: AnswerContext) {
                  seen.push({
                    callId: ctx.callId,
                    state: ctx.state,
                    redelivered: ctx.redelivered,
                    result,
                  });
                },
              },
              transport: target.make(),
              answerHandlers: [{ service: callee, method: "charge", onResult: "paid" }],
            }),
            stop,
          );
          gate.resolve();
          await waitFor(() => seen.length === 1, 30_000, "the answer at the other instance");
          expect(seen[0]).toMatchObject({ state: { order: 1 }, result: { receipt: "r-5" } });
          expect(seen[0]?.callId).toBe(callId);
        } finally {
          gate.resolve();
          for (const s of stop.reverse()) await s().catch(() => undefined);
        }
      },
      T,
    );

    // RabbitMQ requeues an unacked delivery the moment its connection dies; NATS and Redis give
    // it back after their ack wait / idle claim time, which this file does not wait out.
    if (target.kind === "amqp")
      it(
        "another instance handles the answer, redelivered, when the caller was killed handling it",
        async () => {
          const stop: (() => Promise<void>)[] = [];
          const callee = `pay${newId().slice(0, 8)}`;
          const caller = `ord${newId().slice(0, 8)}`;
          try {
            await start(
              createService({
                name: callee,
                instance: {
                  charge: (p: { amount: number }) => ({ receipt: `r-${String(p.amount)}` }),
                },
                transport: target.make(),
              }),
              stop,
            );
            const child = spawnTs(FIXTURE, [], {
              TRANSPORT: target.kind,
              URL: target.url,
              MESH: mesh,
              SERVICE: caller,
              CALLEE: callee,
              HANG: "1",
            });
            await child.stdoutContains("handling ", 60_000);
            child.kill("SIGKILL");
            const exit = await child.done;
            expect(exit.code).toBe(137);
            const callId = /sent (\S+)/.exec(exit.stdout)?.[1];

            const seen: Seen[] = [];
            await start(
              createService({
                name: caller,
                instance: {
                  paid(result: unknown, ctx: AnswerContext) {
                    seen.push({
                      callId: ctx.callId,
                      state: ctx.state,
                      redelivered: ctx.redelivered,
                      result,
                    });
                  },
                },
                transport: target.make(),
                answerHandlers: [{ service: callee, method: "charge", onResult: "paid" }],
              }),
              stop,
            );
            await waitFor(() => seen.length === 1, 30_000, "the redelivered answer");
            expect(seen[0]).toMatchObject({
              callId,
              state: { order: 1 },
              redelivered: true,
              result: { receipt: "r-5" },
            });
          } finally {
            for (const s of stop.reverse()) await s().catch(() => undefined);
          }
        },
        T,
      );
  });
}

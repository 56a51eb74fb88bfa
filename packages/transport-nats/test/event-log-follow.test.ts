import { describe, expect, it } from "vitest";
import { RetentionPolicy, type JetStreamManager, type NatsConnection } from "nats";
import { NuropbConnectionClosedError, noopLogger } from "@nuropb/protocol";
import { createNatsEventLog } from "../src/event-log.ts";

/** A consumer's messages: none until stopped, then the iteration ends. */
function idleMessages(): AsyncIterable<never> & { stop(): void } {
  let wake: (() => void) | undefined;
  let stopped = false;
  return {
    stop() {
      stopped = true;
      wake?.();
    },
    [Symbol.asyncIterator]: () => ({
      next: async (): Promise<IteratorResult<never>> => {
        if (!stopped) await new Promise<void>((resolve) => (wake = resolve));
        return { done: true, value: undefined };
      },
    }),
  };
}

describe("NATS event log follow", () => {
  it("does not leave a listener on the transport's closing per follow", async () => {
    let closedCalls = 0;
    const info = {
      config: { retention: RetentionPolicy.Limits },
      state: { last_seq: 0, first_seq: 0, messages: 0 },
    };
    const jsm = { streams: { info: () => Promise.resolve(info) } } as unknown as JetStreamManager;
    const nc = {
      jetstream: () => ({
        consumers: { get: () => Promise.resolve({ consume: () => idleMessages() }) },
      }),
    } as unknown as NatsConnection;
    const log = createNatsEventLog({
      mesh: "m",
      logger: noopLogger,
      requireOpen: () => ({ nc, jsm }),
      life: {
        ending: false,
        closedError: () => new NuropbConnectionClosedError("closed"),
        closed: () => {
          closedCalls++;
          return new Promise<never>(() => undefined);
        },
      },
    });
    for (let i = 0; i < 5; i++) {
      const stop = new AbortController();
      const follow = (async () => {
        for await (const _ of log.follow({ from: "end", signal: stop.signal })) void _;
      })();
      await new Promise((r) => setTimeout(r, 5));
      stop.abort();
      await follow;
    }
    // One promise chain for the log's lifetime, not one per follow that never goes away.
    expect(closedCalls).toBe(1);
  });
});

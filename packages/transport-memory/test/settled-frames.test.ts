import { describe, expect, it } from "vitest";
import { noopLogger } from "@nuropb/protocol";
import type { Delivery } from "@nuropb/protocol";
import { ServiceConsumer, VHost } from "../src/broker.ts";
import type { QueuedMessage } from "../src/broker.ts";
import { decode, makeFrame } from "./support.ts";

// The ledger's record of a message can outlive it in an old table of a long-lived Map (kept
// until the next full collection): once the message is settled for good, the record must not
// hold its frame, nor through the body the shared slab behind it.

/** One message handed to a consumer whose handler settles it with `settle`. */
function deliverOnce(settle: (d: Delivery) => Promise<void>): {
  vhost: VHost;
  msg: QueuedMessage;
  settled: Promise<void>;
} {
  const vhost = new VHost("m", 10);
  const queue = vhost.declareServiceQueue("svc", [], []);
  let settled: Promise<void> = Promise.resolve();
  const consumer = new ServiceConsumer(queue, 0, (d) => (settled = settle(d)), noopLogger);
  const msg: QueuedMessage = {
    seq: 0,
    frame: makeFrame("hello"),
    redelivered: false,
    expiresAt: undefined,
  };
  consumer.attach();
  consumer.invoke(consumer.take(msg));
  return { vhost, msg, settled };
}

describe("a settled message lets go of its frame", () => {
  it("after ack", async () => {
    const { msg, settled } = deliverOnce((d) => d.ack());
    await settled;
    expect(msg.frame.body.byteLength).toBe(0);
    expect(msg.frame.correlationId).toBe("");
  });

  it("after reject, while the dead letter keeps the whole frame", async () => {
    const { vhost, msg, settled } = deliverOnce((d) => d.reject());
    await settled;
    expect(msg.frame.body.byteLength).toBe(0);
    const [letter] = vhost.deadLetters;
    expect(letter?.reason).toBe("rejected");
    expect(decode(letter?.frame.body ?? new Uint8Array())).toBe("hello");
  });

  it("after dead-lettering with headers, while the dead letter keeps them and the body", async () => {
    const { vhost, msg, settled } = deliverOnce((d) => {
      if (d.deadLetter === undefined) throw new Error("the memory transport dead-letters");
      return d.deadLetter({ nuropb_failure: "x" });
    });
    await settled;
    expect(msg.frame.body.byteLength).toBe(0);
    const [letter] = vhost.deadLetters;
    expect(letter?.frame.headers.nuropb_failure).toBe("x");
    expect(decode(letter?.frame.body ?? new Uint8Array())).toBe("hello");
  });

  it("but keeps it when requeued (it is delivered again)", async () => {
    const { msg, settled } = deliverOnce((d) => d.requeue());
    await settled;
    expect(decode(msg.frame.body)).toBe("hello");
    expect(msg.redelivered).toBe(true);
  });
});

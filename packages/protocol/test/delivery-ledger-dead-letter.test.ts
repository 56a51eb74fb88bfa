import { describe, expect, it } from "vitest";
import type { InboundFrame, Logger } from "@nuropb/protocol";
import { createDeliveryLedger } from "@nuropb/protocol/transport-kit";
import type { DeliveryLedgerOptions, Settlement } from "@nuropb/protocol/transport-kit";

const frame: InboundFrame = {
  headers: { nuropb_type: "command" },
  body: new Uint8Array([1]),
  correlationId: "c-1",
  redelivered: false,
};

function setup(overrides: Partial<DeliveryLedgerOptions<string>> = {}, withDeadLetter = true) {
  const settled: [string, Settlement][] = [];
  const deadLettered: [string, Readonly<Record<string, string>>][] = [];
  const warnings: string[] = [];
  const logger: Logger = {
    debug: () => undefined,
    info: () => undefined,
    warn: (m) => void warnings.push(m),
    error: () => undefined,
    child: () => logger,
  };
  const ledger = createDeliveryLedger<string>({
    prefetch: 1,
    settle: (m, outcome) => void settled.push([m, outcome]),
    giveBack: () => undefined,
    ...(withDeadLetter
      ? {
          deadLetter: (m: string, headers: Readonly<Record<string, string>>) =>
            void deadLettered.push([m, headers]),
        }
      : {}),
    logger,
    ...overrides,
  });
  return { ledger, settled, deadLettered, warnings };
}

describe("DeliveryLedger deadLetter (Delivery.deadLetter with headers)", () => {
  it("dead-letters once with the headers, frees the slot, and later settles are no-ops", async () => {
    const { ledger, settled, deadLettered } = setup();
    const held = ledger.hold("m1");
    const d = ledger.delivery(held, frame);
    expect(ledger.hasRoom()).toBe(false);
    await d.deadLetter?.({ nuropb_failure_error: "NuropbException" });
    await d.ack();
    await d.deadLetter?.({ again: "x" });
    expect(deadLettered).toEqual([["m1", { nuropb_failure_error: "NuropbException" }]]);
    expect(settled).toEqual([]);
    expect(ledger.hasRoom()).toBe(true);
  });

  it("falls back to a plain reject when the transport cannot send the copy", async () => {
    const { ledger, settled, warnings } = setup({
      deadLetter: () => Promise.reject(new Error("no confirm")),
    });
    await ledger.delivery(ledger.hold("m1"), frame).deadLetter?.({ a: "b" });
    expect(settled).toEqual([["m1", "reject"]]);
    expect(warnings).toEqual([
      "could not dead-letter with headers; rejecting the delivery instead",
    ]);
    const sync = setup({
      deadLetter: () => {
        throw new Error("closed");
      },
    });
    await sync.ledger.delivery(sync.ledger.hold("m2"), frame).deadLetter?.({});
    expect(sync.settled).toEqual([["m2", "reject"]]);
  });

  it("gives deliveries no deadLetter when the transport has none, and keeps no own fields", async () => {
    const { ledger } = setup({}, false);
    const d = ledger.delivery(ledger.hold("m1"), frame);
    expect(d.deadLetter).toBeUndefined();
    expect(() => ledger.deadLetter(ledger.hold("m2"), {})).toThrow(TypeError);
    const withIt = setup().ledger;
    let seen: object = {};
    void withIt.dispatch(withIt.hold("m3"), frame, (delivery) => {
      seen = { ...delivery };
      expect(typeof delivery.deadLetter).toBe("function");
      return delivery.ack();
    });
    await Promise.resolve();
    expect(Object.keys(seen).sort()).toEqual([
      "body",
      "correlationId",
      "headers",
      "redelivered",
      "replyTo",
      "ttlMs",
    ]);
  });
});

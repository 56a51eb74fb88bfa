import { afterEach, describe, expect, it } from "vitest";
import { noopLogger, type DeliveryHandler } from "@nuropb/protocol";
import { ServiceConsumer, type ServiceConsumerDeps } from "../src/service-consumer.ts";
import { FakeNats, pullStatus } from "./fake-nats.ts";

const NEXT = "$JS.API.CONSUMER.MSG.NEXT.S.c";

interface Sent {
  readonly subject: string;
  readonly payload: string;
  readonly reply: string | undefined;
}

const started: ServiceConsumer[] = [];
afterEach(() => {
  for (const c of started.splice(0)) c.shutdown();
});

function consumer(overrides: Partial<ServiceConsumerDeps> = {}): {
  fake: FakeNats;
  sent: Sent[];
  pulls: () => Sent[];
  consumer: ServiceConsumer;
} {
  const fake = new FakeNats();
  const sent: Sent[] = [];
  const handler: DeliveryHandler = (d) => d.ack();
  const c = new ServiceConsumer({
    nc: fake.nc,
    control: (subject, payload, reply) => sent.push({ subject, payload, reply }),
    logger: noopLogger,
    sources: [{ stream: "S", consumer: "c" }],
    window: 4,
    ackWaitMs: 30_000,
    handler,
    deadLetter: () => Promise.resolve(),
    onConsumerLost: () => undefined,
    onStopped: () => undefined,
    ...overrides,
  });
  started.push(c);
  return { fake, sent, pulls: () => sent.filter((s) => s.subject === NEXT), consumer: c };
}

describe("ServiceConsumer pulls", () => {
  it("pulls again when a pull ends with its pending count (408 expired)", () => {
    const { fake, pulls, consumer: c } = consumer();
    c.start();
    expect(pulls()).toHaveLength(1);
    const inbox = pulls()[0]?.reply ?? "";
    expect(fake.deliver(inbox, pullStatus(408, "Request Timeout", 4))).toBe(1);
    expect(pulls()).toHaveLength(2);
    expect(JSON.parse(pulls()[1]?.payload ?? "{}")).toMatchObject({ batch: 4 });
  });

  it.each([
    [409, "Consumer Deleted"],
    [409, "Leadership Change"],
    [409, "Exceeded MaxWaiting"],
    [503, "No Responders"],
  ])(
    "a %i '%s' status without Nats-Pending-Messages ends the pull: it pulls again at once",
    (code, description) => {
      const { fake, pulls, consumer: c } = consumer();
      c.start();
      expect(pulls()).toHaveLength(1);
      const inbox = pulls()[0]?.reply ?? "";
      fake.deliver(inbox, pullStatus(code, description));
      expect(pulls()).toHaveLength(2);
      expect(JSON.parse(pulls()[1]?.payload ?? "{}")).toMatchObject({ batch: 4 });
    },
  );
});

import { afterEach, describe, expect, it, vi } from "vitest";
import { noopLogger, type DeliveryHandler, type Logger } from "@nuropb/protocol";
import {
  ServiceConsumer,
  WITHDRAW_WAIT_MS,
  type ServiceConsumerDeps,
} from "../src/service-consumer.ts";
import { DEAD_LETTER_ATTEMPTS, DeadLetterRefused } from "../src/dead-letter.ts";
import { PULL_CREDIT } from "../src/pull-loop.ts";
import { FakeNats, jsDelivery, pullStatus } from "./fake-nats.ts";

const NEXT = "$JS.API.CONSUMER.MSG.NEXT.S.c";

interface Sent {
  readonly subject: string;
  readonly payload: string;
  readonly reply: string | undefined;
}

const started: ServiceConsumer[] = [];
afterEach(() => {
  for (const c of started.splice(0)) void c.shutdown();
  vi.useRealTimers();
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
    linkUp: () => true,
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
    [409, "Consumer Deleted", true],
    [409, "Leadership Change", false],
    [409, "Exceeded MaxWaiting", false],
    [503, "No Responders", true],
  ])(
    "a %i '%s' status answering every pull: pulls back off (100 ms doubling to 2 s), not at once",
    async (code, description, lost) => {
      vi.useFakeTimers();
      const onConsumerLost = vi.fn();
      const { fake, pulls, consumer: c } = consumer({ onConsumerLost });
      c.start();
      // The server answers each pull with the status (no Nats-Pending-Messages) right away.
      let answered = 0;
      const answer = (): void => {
        for (const p of pulls().slice(answered)) {
          answered++;
          fake.deliver(p.reply ?? "", pullStatus(code, description));
        }
      };
      answer();
      // The pull ended: no pull is outstanding, but the next one waits.
      expect(pulls()).toHaveLength(1);
      for (let ms = 0; ms < 1_000; ms += 10) {
        await vi.advanceTimersByTimeAsync(10);
        answer();
      }
      // 100 + 200 + 400 ms: three more pulls in the first second (852,458 before).
      expect(pulls()).toHaveLength(4);
      expect(JSON.parse(pulls()[3]?.payload ?? "{}")).toMatchObject({ batch: 4 });
      for (let ms = 0; ms < 10_000; ms += 10) {
        await vi.advanceTimersByTimeAsync(10);
        answer();
      }
      // Then every 2 s at most.
      expect(pulls().length).toBeLessThanOrEqual(4 + 1 + 5);
      expect(onConsumerLost).toHaveBeenCalledTimes(lost ? pulls().length : 0);
      // A message resets the wait: the next status is followed by a pull 100 ms later.
      const before = pulls().length;
      await vi.advanceTimersByTimeAsync(2_000);
      expect(pulls()).toHaveLength(before + 1);
      fake.deliver(pulls().at(-1)?.reply ?? "", jsDelivery({ stream: "S", consumer: "c", seq: 1 }));
      const afterMsg = pulls().length;
      fake.deliver(pulls().at(-1)?.reply ?? "", pullStatus(code, description));
      answered = pulls().length;
      await vi.advanceTimersByTimeAsync(100);
      expect(pulls().length).toBeGreaterThan(afterMsg);
    },
  );
});

describe("ServiceConsumer stop", () => {
  it("withdraws the pull inbox: what the server sent before goes back at once, and nothing is left listening", async () => {
    const { fake, sent, pulls, consumer: c } = consumer();
    c.start();
    const inbox = pulls()[0]?.reply ?? "";
    let answer!: () => void;
    fake.flushGate = new Promise((r) => (answer = r));
    const stopping = c.stop();
    // Sent by the server before it read the unsubscription: still read, and sent back.
    const early = jsDelivery({ stream: "S", consumer: "c", seq: 1 });
    expect(fake.deliver(inbox, early)).toBe(1);
    expect(sent.filter((s) => s.subject === early.reply).map((s) => s.payload)).toEqual(["-NAK"]);
    answer();
    await stopping;
    // The server drops a pull whose inbox nobody listens to, instead of handing it the next
    // message (which would come back only after the ack wait, or after a restart).
    expect(fake.interest(inbox)).toBe(0);
    expect(pulls()).toHaveLength(1);
  });

  it("the transport closing withdraws the inbox the same way, after giving back what it holds", async () => {
    const { fake, sent, pulls, consumer: c } = consumer({ handler: () => undefined });
    c.start();
    const inbox = pulls()[0]?.reply ?? "";
    const held = jsDelivery({ stream: "S", consumer: "c", seq: 1 });
    fake.deliver(inbox, held);
    let answer!: () => void;
    fake.flushGate = new Promise((r) => (answer = r));
    const closing = c.shutdown();
    expect(sent.filter((s) => s.subject === held.reply).map((s) => s.payload)).toEqual(["-NAK"]);
    const early = jsDelivery({ stream: "S", consumer: "c", seq: 2 });
    expect(fake.deliver(inbox, early)).toBe(1);
    expect(sent.filter((s) => s.subject === early.reply).map((s) => s.payload)).toEqual(["-NAK"]);
    answer();
    await closing;
    expect(fake.interest(inbox)).toBe(0);
  });

  it(`waits at most ${String(WITHDRAW_WAIT_MS)} ms for a server that does not confirm the withdrawal`, async () => {
    vi.useFakeTimers();
    const { fake, consumer: c } = consumer();
    c.start();
    fake.flushGate = new Promise<void>(() => undefined);
    let stopped = false;
    void c.stop().then(() => (stopped = true));
    await vi.advanceTimersByTimeAsync(WITHDRAW_WAIT_MS - 1);
    expect(stopped).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(stopped).toBe(true);
  });

  it("with the link down it lets go of the inbox at once (the server dropped the pulls with it)", async () => {
    const { fake, pulls, consumer: c } = consumer({ linkUp: () => false });
    c.start();
    const inbox = pulls()[0]?.reply ?? "";
    fake.flushGate = new Promise<void>(() => undefined);
    await c.stop();
    expect(fake.interest(inbox)).toBe(0);
    expect(fake.flushes).toEqual([]);
  });
});

describe("ServiceConsumer pull credit", () => {
  it(`asks the server for at most ${String(PULL_CREDIT)} messages at a time however wide the window, and keeps asking until the window is full`, () => {
    const window = 64;
    const { fake, pulls, consumer: c } = consumer({ window, handler: () => undefined });
    c.start();
    const asked = (): number =>
      pulls().reduce((n, p) => n + (JSON.parse(p.payload) as { batch: number }).batch, 0);
    expect(asked()).toBe(PULL_CREDIT);
    // The server delivers on the newest pull while there is any credit left (handlers hold).
    for (let seq = 1; asked() > seq - 1; seq++) {
      fake.deliver(pulls().at(-1)?.reply ?? "", jsDelivery({ stream: "S", consumer: "c", seq }));
      expect(asked() - seq, `credit left after message ${String(seq)}`).toBeLessThanOrEqual(
        PULL_CREDIT,
      );
      expect(asked() - seq, `credit left after message ${String(seq)}`).toBeGreaterThanOrEqual(
        Math.min(PULL_CREDIT / 2, window - seq),
      );
    }
    expect(asked()).toBe(window);
  });
});

describe("ServiceConsumer progress", () => {
  it("is paced by the consumer's ack wait on the server when it is lower than the option", async () => {
    vi.useFakeTimers();
    const {
      fake,
      sent,
      pulls,
      consumer: c,
    } = consumer({
      ackWaitMs: 30_000,
      // Another instance declared the consumer with 3 s.
      serverAckWaitMs: () => 3_000,
      handler: () => new Promise<void>(() => undefined),
    });
    const ackSubject = deliverOne(fake, pulls, c);
    await vi.advanceTimersByTimeAsync(2_900);
    // At least once per third of the server's 3 s.
    expect(sent.filter((s) => s.subject === ackSubject && s.payload === "+WPI").length).toBe(2);
  });
});

function recordingLogger(): { logger: Logger; lines: { level: string; msg: string }[] } {
  const lines: { level: string; msg: string }[] = [];
  const logger: Logger = {
    debug: (msg) => void lines.push({ level: "debug", msg }),
    info: (msg) => void lines.push({ level: "info", msg }),
    warn: (msg) => void lines.push({ level: "warn", msg }),
    error: (msg) => void lines.push({ level: "error", msg }),
    child: () => logger,
  };
  return { logger, lines };
}

/** Starts `c` and hands it one delivery of stream S, sequence 7, through its pull inbox. */
function deliverOne(fake: FakeNats, pulls: () => Sent[], c: ServiceConsumer): string {
  c.start();
  const msg = jsDelivery({ stream: "S", consumer: "c", seq: 7 });
  fake.deliver(pulls()[0]?.reply ?? "", msg);
  return msg.reply;
}

describe("ServiceConsumer dead letters", () => {
  it("progress goes on while the dead letter is stored, until the message is terminated", async () => {
    vi.useFakeTimers();
    let stored!: () => void;
    const deadLetter = vi.fn(() => new Promise<void>((resolve) => (stored = resolve)));
    const {
      fake,
      sent,
      pulls,
      consumer: c,
    } = consumer({
      ackWaitMs: 3_000,
      deadLetter,
      handler: (d) => d.reject(),
    });
    const ackSubject = deliverOne(fake, pulls, c);
    const verbs = (): string[] =>
      sent.filter((s) => s.subject === ackSubject).map((s) => s.payload);
    // The copy waits (for the link, say) through several ack waits.
    await vi.advanceTimersByTimeAsync(9_000);
    expect(deadLetter).toHaveBeenCalledTimes(1);
    expect(verbs().filter((v) => v === "+WPI").length).toBeGreaterThanOrEqual(3);
    expect(verbs()).not.toContain("+TERM");
    stored();
    await vi.advanceTimersByTimeAsync(0);
    expect(verbs().at(-1)).toBe("+TERM");
    const settledVerbs = verbs().length;
    await vi.advanceTimersByTimeAsync(9_000);
    expect(verbs()).toHaveLength(settledVerbs);
  });

  it(`a dead letter the broker keeps refusing is tried ${String(DEAD_LETTER_ATTEMPTS)} times, then the message is terminated and an error logged`, async () => {
    vi.useFakeTimers();
    const { logger, lines } = recordingLogger();
    const deadLetter = vi.fn(() =>
      Promise.reject(new DeadLetterRefused("expected stream does not match (10060)")),
    );
    const {
      fake,
      sent,
      pulls,
      consumer: c,
    } = consumer({
      logger,
      deadLetter,
      handler: (d) => d.reject(),
    });
    const ackSubject = deliverOne(fake, pulls, c);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(deadLetter).toHaveBeenCalledTimes(DEAD_LETTER_ATTEMPTS);
    expect(sent.filter((s) => s.subject === ackSubject).map((s) => s.payload)).toContain("+TERM");
    expect(lines.filter((l) => l.level === "error")).toHaveLength(1);
  });

  it.each([
    ["a publish timeout", { code: "TIMEOUT" }],
    ["no responders (the stream's leader is elected)", { code: "503" }],
  ])(
    "a dead letter failing with %s is sent again, with progress, and never terminated without a copy",
    async (_what, props) => {
      vi.useFakeTimers();
      let failures = 0;
      const deadLetter = vi.fn(() =>
        failures++ < 8
          ? Promise.reject(Object.assign(new Error("no JetStream acknowledgement"), props))
          : Promise.resolve(),
      );
      const {
        fake,
        sent,
        pulls,
        consumer: c,
      } = consumer({
        ackWaitMs: 3_000,
        deadLetter,
        handler: (d) => d.reject(),
      });
      const ackSubject = deliverOne(fake, pulls, c);
      const verbs = (): string[] =>
        sent.filter((s) => s.subject === ackSubject).map((s) => s.payload);
      await vi.advanceTimersByTimeAsync(5_000);
      expect(deadLetter.mock.calls.length).toBeGreaterThan(DEAD_LETTER_ATTEMPTS);
      expect(verbs()).not.toContain("+TERM");
      expect(verbs()).not.toContain("-NAK");
      // Backing off: 250 ms doubling up to 10 s, so 8 failures take about 30 s.
      await vi.advanceTimersByTimeAsync(60_000);
      expect(deadLetter).toHaveBeenCalledTimes(9);
      // Progress all along, then +TERM once the copy is stored.
      expect(verbs().filter((v) => v === "+WPI").length).toBeGreaterThanOrEqual(20);
      expect(verbs().filter((v) => v !== "+WPI")).toEqual(["+TERM"]);
    },
  );

  it("a dead letter lost with the link leaves the message unacknowledged, to come back", async () => {
    vi.useFakeTimers();
    const deadLetter = vi.fn(() => Promise.reject(new Error("NATS link lost")));
    const {
      fake,
      sent,
      pulls,
      consumer: c,
    } = consumer({
      deadLetter,
      linkUp: () => false,
      handler: (d) => d.reject(),
    });
    const ackSubject = deliverOne(fake, pulls, c);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(deadLetter).toHaveBeenCalledTimes(1);
    expect(sent.filter((s) => s.subject === ackSubject && s.payload !== "+WPI")).toEqual([]);
  });
});

describe("ServiceConsumer settlement", () => {
  /** The verbs sent on the ack subject of the message with stream sequence `seq` (see jsDelivery). */
  function verbsOf(sent: Sent[], seq: number): string[] {
    const prefix = `$JS.ACK.S.c.1.${String(seq)}.${String(seq)}.`;
    return sent
      .filter((s) => s.subject.startsWith(prefix) && s.payload !== "+WPI")
      .map((s) => s.payload);
  }

  it("settles once: an ack followed by requeue and reject sends +ACK alone", async () => {
    const deadLetter = vi.fn<ServiceConsumerDeps["deadLetter"]>(() => Promise.resolve());
    let settlings: Promise<unknown> | undefined;
    const {
      fake,
      sent,
      pulls,
      consumer: c,
    } = consumer({
      deadLetter,
      handler: (d) => {
        settlings = Promise.all([d.ack(), d.requeue(), d.reject()]);
      },
    });
    deliverOne(fake, pulls, c);
    await settlings;
    expect(verbsOf(sent, 7)).toEqual(["+ACK"]);
    expect(deadLetter).not.toHaveBeenCalled();
  });

  it.each([
    [
      "throws",
      (): void => {
        throw new Error("handler failure (expected by the test)");
      },
    ],
    [
      "rejects",
      (): Promise<void> => Promise.reject(new Error("handler failure (expected by the test)")),
    ],
  ])(
    "a handler that %s without settling has its message dead-lettered as rejected, then terminated",
    async (_how, handler) => {
      const deadLetter = vi.fn<ServiceConsumerDeps["deadLetter"]>(() => Promise.resolve());
      const { fake, sent, pulls, consumer: c } = consumer({ deadLetter, handler });
      deliverOne(fake, pulls, c);
      await vi.waitFor(() => expect(verbsOf(sent, 7)).toEqual(["+TERM"]));
      expect(deadLetter).toHaveBeenCalledTimes(1);
      expect(deadLetter.mock.calls[0]?.[2]).toBe("rejected");
    },
  );

  it("a handler that throws after acking leaves the ack alone", async () => {
    const deadLetter = vi.fn<ServiceConsumerDeps["deadLetter"]>(() => Promise.resolve());
    const {
      fake,
      sent,
      pulls,
      consumer: c,
    } = consumer({
      deadLetter,
      handler: async (d) => {
        await d.ack();
        throw new Error("handler failure (expected by the test)");
      },
    });
    deliverOne(fake, pulls, c);
    await vi.waitFor(() => expect(verbsOf(sent, 7)).toEqual(["+ACK"]));
    await new Promise((r) => setTimeout(r, 10));
    expect(verbsOf(sent, 7)).toEqual(["+ACK"]);
    expect(deadLetter).not.toHaveBeenCalled();
  });

  it("hands out at most `window` deliveries; stop gives back the waiting, the returned and, once it returns, the running", async () => {
    const running: { ack: () => Promise<void>; finish: () => void }[] = [];
    const {
      fake,
      sent,
      pulls,
      consumer: c,
    } = consumer({
      window: 2,
      handler: (d) => new Promise<void>((finish) => running.push({ ack: () => d.ack(), finish })),
    });
    c.start();
    const inbox = pulls()[0]?.reply ?? "";
    for (const seq of [1, 2, 3])
      fake.deliver(inbox, jsDelivery({ stream: "S", consumer: "c", seq }));
    // Two slots: the third waits, not in the handler.
    expect(running).toHaveLength(2);
    await running[0]?.ack();
    expect(verbsOf(sent, 1)).toEqual(["+ACK"]);
    expect(running).toHaveLength(3);
    // seq 1's handler returns after its ack; seq 2's returns unsettled; seq 3's still runs.
    running[0]?.finish();
    running[1]?.finish();
    await new Promise((r) => setTimeout(r, 0));
    const stopping = c.stop();
    expect(verbsOf(sent, 2)).toEqual(["-NAK"]);
    expect(verbsOf(sent, 3)).toEqual([]);
    running[2]?.finish();
    await vi.waitFor(() => expect(verbsOf(sent, 3)).toEqual(["-NAK"]));
    await stopping;
    expect(verbsOf(sent, 1)).toEqual(["+ACK"]);
  });
});

import { afterEach, describe, expect, it, vi } from "vitest";
import type { Transport, TransportEvent } from "@nuropb/protocol";
import { createNatsTransport } from "@nuropb/transport-nats";
import { connections, type FakeNats } from "./fake-nats.ts";

// Issue #19: a service whose server of a cluster died fails over to another server, where
// JetStream API requests go unanswered until a new meta leader is elected.

vi.mock("nats", async (importOriginal) => ({
  ...(await importOriginal<typeof import("nats")>()),
  connect: async () => (await import("./fake-nats.ts")).fakeConnect(),
}));

const made: Transport[] = [];
afterEach(async () => {
  await Promise.allSettled(made.splice(0).map((t) => t.close()));
  connections.splice(0);
});

const PULL_SUBJECT = "$JS.API.CONSUMER.MSG.NEXT.NUROPB-m-SQ-svc.nuropb";

function pulls(fake: FakeNats): number {
  return fake.published.filter((p) => p.subject === PULL_SUBJECT).length;
}

describe("failing over to another server of a cluster", () => {
  it("pulls again at once and re-declares in bounded tries while JetStream does not answer", async () => {
    const t = createNatsTransport({ servers: "nats://fake:4222", mesh: "m" });
    made.push(t);
    const events: TransportEvent[] = [];
    void (async () => {
      for await (const e of t.events()) events.push(e);
    })();
    await t.connect();
    const fake = connections.at(-1);
    if (fake === undefined) throw new Error("no connection made");
    await t.consumeService(
      { service: "svc", rpcBindings: [], eventBindings: [], prefetch: 1 },
      (d) => d.ack(),
    );
    expect(pulls(fake)).toBe(1);

    // The new server's JetStream API gets no meta leader for a while: requests stay unanswered.
    const answer = fake.jsm.streams.info;
    let tries = 0;
    let elected = false;
    fake.jsm.streams.info = (name) => {
      tries++;
      return elected ? answer(name) : new Promise(() => undefined);
    };
    fake.disconnect();
    await vi.waitFor(() => expect(events.map((e) => e.type)).toContain("disconnected"));
    fake.reconnect();

    // The consumer is still there: the service pulls from it without waiting for the API.
    await vi.waitFor(() => expect(pulls(fake)).toBe(2));
    // The declaration that got no answer is given up (reported once) and tried again.
    await vi.waitFor(() => expect(events.map((e) => e.type)).toContain("errored"), {
      timeout: 6_000,
    });
    const errored = events.find((e) => e.type === "errored");
    const cause = errored?.type === "errored" ? errored.error.cause : undefined;
    expect(String(cause)).toMatch(
      /declaring service 'svc': JetStream did not answer within 2000 ms/,
    );
    const triesAtFailure = tries;
    await vi.waitFor(() => expect(tries).toBeGreaterThan(triesAtFailure));
    expect(events.map((e) => e.type)).not.toContain("reconnected");

    // A meta leader is elected: the next try succeeds and the transport reports it is back.
    elected = true;
    await vi.waitFor(() => expect(events.map((e) => e.type)).toContain("reconnected"), {
      timeout: 6_000,
    });
  }, 20_000);

  it("a new service's declaration is tried again while JetStream does not answer, then it consumes", async () => {
    const warnings: string[] = [];
    const logger = {
      debug: () => undefined,
      info: () => undefined,
      warn: (message: string) => void warnings.push(message),
      error: () => undefined,
      child: () => logger,
    };
    const t = createNatsTransport({ servers: "nats://fake:4222", mesh: "m", logger });
    made.push(t);
    await t.connect();
    const fake = connections.at(-1);
    if (fake === undefined) throw new Error("no connection made");
    // The first request gets no answer (no meta leader yet); later ones are answered.
    const answer = fake.jsm.streams.info;
    let tries = 0;
    fake.jsm.streams.info = (name) => (++tries === 1 ? new Promise(() => undefined) : answer(name));
    await t.consumeService(
      { service: "svc", rpcBindings: [], eventBindings: [], prefetch: 1 },
      (d) => d.ack(),
    );
    expect(warnings).toEqual(["JetStream did not answer a declaration; retrying"]);
    expect(pulls(fake)).toBe(1);
  }, 20_000);

  it("a declaration the server refuses rejects at once, not tried again", async () => {
    const t = createNatsTransport({ servers: "nats://fake:4222", mesh: "m" });
    made.push(t);
    await t.connect();
    const fake = connections.at(-1);
    if (fake === undefined) throw new Error("no connection made");
    let tries = 0;
    fake.jsm.streams.info = () => {
      tries++;
      return Promise.reject(
        Object.assign(new Error("insufficient resources"), {
          api_error: { code: 500, err_code: 10023, description: "insufficient resources" },
        }),
      );
    };
    await expect(
      t.consumeService({ service: "svc", rpcBindings: [], eventBindings: [], prefetch: 1 }, (d) =>
        d.ack(),
      ),
    ).rejects.toThrow(/insufficient resources/);
    expect(tries).toBe(1);
  });
});

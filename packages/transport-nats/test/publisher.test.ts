import { MsgHdrsImpl } from "nats";
import { describe, expect, it } from "vitest";
import { createTransportLifecycle, noopLogger, type Frame } from "@nuropb/protocol";
import { decodeFrameHeaders } from "../src/frame-headers.ts";
import { NatsLink } from "../src/link.ts";
import { rpcSubject, requestSubject } from "../src/names.ts";
import { Publisher } from "../src/publisher.ts";
import { FakeNats, fakeMsg } from "./fake-nats.ts";

const mesh = "m";
const request = (correlationId: string): Frame => ({
  headers: { nuropb_type: "request" },
  body: new TextEncoder().encode(correlationId),
  correlationId,
  replyTo: "caller",
  ttlMs: 5_000,
});

/** A publisher on a fake connection where one instance of `svc` takes core requests. */
async function setup(
  coreFraming: "compact" | "headers",
): Promise<{ fake: FakeNats; publisher: Publisher }> {
  const fake = new FakeNats();
  const life = createTransportLifecycle("NATS");
  await life.connect(() => Promise.resolve());
  const link = new NatsLink(life, noopLogger);
  link.attach(fake.nc);
  const publisher = new Publisher({
    mesh,
    link,
    life,
    logger: noopLogger,
    publishTimeoutMs: 1_000,
    requests: "core",
    coreFraming,
  });
  publisher.listen(fake.nc);
  fake.subscribe(requestSubject(mesh, "svc"), { callback: () => undefined });
  // The first request waits for its flush and shows the subject has a subscriber.
  await publisher.send(fake.nc, { kind: "rpc", service: "svc" }, request("first"));
  return { fake, publisher };
}

/** The server's "no responders" status, as it sends it to a request's reply subject. */
function noResponders(fake: FakeNats, reply: string): void {
  const status = MsgHdrsImpl.decode(new TextEncoder().encode("NATS/1.0 503\r\n\r\n"));
  fake.deliver(reply, fakeMsg(reply, new Uint8Array(), { headers: status }));
}

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

describe.each(["compact", "headers"] as const)(
  "Publisher, core requests sent once their subject has a subscriber (%s framing)",
  (framing) => {
    it("moves a request into the service's stream when its 503 comes before the flush after it", async () => {
      const { fake, publisher } = await setup(framing);
      let pong!: () => void;
      fake.flushGate = new Promise<void>((r) => (pong = r));
      await publisher.send(fake.nc, { kind: "rpc", service: "svc" }, request("second"));
      await turn(); // written at the end of the turn, with a flush after it
      const sent = fake.published.at(-1);
      expect(sent?.subject).toBe(requestSubject(mesh, "svc"));
      noResponders(fake, sent?.reply ?? "");
      const stored = fake.published.at(-1);
      expect(stored?.subject).toBe(rpcSubject(mesh, "svc"));
      // The stream stores the headed form, whichever framing went out on core NATS.
      expect(new TextDecoder().decode(stored?.data)).toBe("second");
      const fields = decodeFrameHeaders(stored?.headers);
      expect(fields).toEqual({
        headers: { nuropb_type: "request" },
        correlationId: "second",
        replyTo: "caller",
        ttlMs: 5_000,
        sentAtMs: fields.sentAtMs,
      });
      expect(fields.sentAtMs).toBeGreaterThan(Date.now() - 60_000);
      expect(sent?.headers === undefined).toBe(framing === "compact");
      pong();
    });

    it("forgets a request once a flush after it is answered: a later 503 stores nothing", async () => {
      const { fake, publisher } = await setup(framing);
      await publisher.send(fake.nc, { kind: "rpc", service: "svc" }, request("second"));
      await turn();
      const flushes = fake.flushes.length;
      await new Promise((r) => setTimeout(r, 50)); // a flush follows within 20 ms
      expect(fake.flushes.length).toBe(flushes + 1);
      await turn(); // and is answered
      const sent = fake.published.at(-1);
      expect(sent?.subject).toBe(requestSubject(mesh, "svc"));
      const count = fake.published.length;
      noResponders(fake, sent?.reply ?? "");
      expect(fake.published).toHaveLength(count);
    });

    it("refuses a header value that is not a string or null with the caller's TypeError, untranslated", async () => {
      const { fake, publisher } = await setup(framing);
      const count = fake.published.length;
      const bad = { ...request("bad"), headers: { n: 1 } as unknown as Frame["headers"] };
      for (const to of [
        { kind: "rpc", service: "svc" },
        { kind: "reply", address: "caller" },
        { kind: "event", topic: "a.b" },
      ] as const) {
        await expect(publisher.send(fake.nc, to, bad)).rejects.toThrow(
          new TypeError("frame header 'n' must be a string or null"),
        );
      }
      await turn();
      expect(fake.published).toHaveLength(count);
    });
  },
);

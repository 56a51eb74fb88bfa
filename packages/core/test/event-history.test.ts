import { afterEach, describe, expect, it } from "vitest";
import { NuropbTransportError, encodePayload, eventLogOf, newId } from "@nuropb/protocol";
import type { Context, Transport, TransportEventLog } from "@nuropb/protocol";
import {
  MAX_EVENT_PAGE_LIMIT,
  NuropbEventLogUnavailableError,
  createClient,
  createService,
  publishToMesh,
  type MeshParticipant,
  type StoredEvent,
} from "@nuropb/core";
import { createMesh, waitFor } from "./helpers.ts";

const RETENTION = { maxAgeMs: 3_600_000, maxBytes: 16 * 1024 * 1024 };

describe("event history", () => {
  let mesh = createMesh();
  afterEach(async () => {
    await mesh.cleanup();
    mesh = createMesh();
  });

  async function client(setUp = true): Promise<{ c: MeshParticipant; t: Transport }> {
    const t = mesh.transport();
    const c = createClient({ transport: t });
    mesh.defer(() => c.disconnect());
    await c.connect();
    if (setUp) await eventLogOf(t)?.setup(RETENTION);
    return { c, t };
  }

  it("persisted publish resolves once the log holds the event; queryEvents reads it back", async () => {
    const { c } = await client();
    await c.publishEvent(
      "orders.created",
      { id: 1 },
      { user: "ann" },
      { persisted: true, traceId: "t-1" },
    );
    await c.publishEvent("orders.shipped", { id: 1 }, {}, { target: ["billing"] });
    await c.publishEvent("users.created", { id: 9 });
    const page = await c.queryEvents({ topics: ["orders.*"] });
    expect(page.cursor).toBeUndefined();
    expect(page.events.map((e) => [e.topic, e.event])).toEqual([
      ["orders.created", { id: 1 }],
      ["orders.shipped", { id: 1 }],
    ]);
    const [first, second] = page.events as [StoredEvent, StoredEvent];
    expect(first.traceId).toBe("t-1");
    expect(first.context).toEqual({ user: "ann" });
    expect(first.target).toBeNull();
    expect(second.target).toEqual(["billing"]);
    expect(typeof first.position).toBe("string");
    expect(first.timestamp).toBeLessThanOrEqual(second.timestamp);
  });

  it("a persisted event is also delivered to subscribers", async () => {
    const got: unknown[] = [];
    const t = mesh.transport();
    class Audit {
      handleEvent(event: { readonly event: unknown }): void {
        got.push(event.event);
      }
    }
    const service = createService({
      transport: t,
      name: "audit",
      instance: new Audit(),
      eventBindings: ["orders.#"],
    });
    mesh.defer(() => service.disconnect());
    await service.connect();
    const { c } = await client();
    await c.publishEvent("orders.created", { id: 2 }, {}, { persisted: true });
    await waitFor(() => got.length === 1);
    expect(got).toEqual([{ id: 2 }]);
  });

  it("pages with a cursor", async () => {
    const { c } = await client();
    for (let i = 0; i < 7; i++) await c.publishEvent(`p.${i}`, i);
    const seen: unknown[] = [];
    let after: string | undefined;
    let pages = 0;
    do {
      const page = await c.queryEvents({ topics: ["p.*"], limit: 3, ...(after ? { after } : {}) });
      pages++;
      seen.push(...page.events.map((e) => e.event));
      after = page.cursor;
    } while (after !== undefined);
    expect(seen).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(pages).toBe(3);
  });

  it("reads a time range (since inclusive, until exclusive; Dates too)", async () => {
    const { c } = await client();
    await c.publishEvent("tr.a", "a", {}, { persisted: true });
    await new Promise((r) => setTimeout(r, 5));
    await c.publishEvent("tr.b", "b", {}, { persisted: true });
    const all = await c.queryEvents({ topics: ["tr.*"] });
    const b = all.events[1] as StoredEvent;
    expect(b.timestamp).toBeGreaterThan((all.events[0] as StoredEvent).timestamp);
    const since = await c.queryEvents({ topics: ["tr.*"], since: b.timestamp });
    expect(since.events.map((e) => e.event)).toEqual(["b"]);
    const until = await c.queryEvents({ topics: ["tr.*"], until: new Date(b.timestamp) });
    expect(until.events.map((e) => e.event)).toEqual(["a"]);
    // `since` holds even after a cursor from before it.
    const both = await c.queryEvents({
      topics: ["tr.*"],
      after: (all.events[0] as StoredEvent).position,
      since: b.timestamp + 1,
    });
    expect(both.events).toEqual([]);
    const first = all.events[0] as StoredEvent;
    const fromCursor = await c.queryEvents({ topics: ["tr.*"], after: first.position, since: 0 });
    expect(fromCursor.events.map((e) => e.event)).toEqual(["b"]);
  });

  it("leaves credentials out of the contexts read back", async () => {
    const { c } = await client();
    // A client (or a Python peer, or a service with eventContext "full") publishes everything.
    await c.publishEvent("sec.x", 1, {
      Authorization: "Bearer secret-token",
      authorization: "Bearer lower",
      apiKey: "k-123",
      sessionToken: "s-1",
      db_password: "pw-1",
      tenant: "t-1",
      user: "ann",
    });
    class Orders {
      @publishToMesh({ contextTokenKey: "sessionToken" })
      get(): string {
        return "ok";
      }
    }
    const service = createService({
      transport: mesh.transport(),
      name: "orders",
      instance: new Orders(),
      secretContextKeys: ["apiKey"],
      eventContext: "full",
    });
    mesh.defer(() => service.disconnect());
    await service.connect();
    // Credential-like keys are left out for every reader, a client without secret keys too.
    const byClient = await c.queryEvents({ topics: ["sec.*"] });
    expect(byClient.events[0]?.context).toEqual({ tenant: "t-1", user: "ann" });
    expect(JSON.stringify(byClient)).not.toMatch(/secret-token|lower|k-123|s-1|pw-1/);
    const more = await c.queryEvents({ topics: ["sec.*"], secretContextKeys: ["tenant"] });
    expect(more.events[0]?.context).toEqual({ user: "ann" });
    const byService = await service.queryEvents({ topics: ["sec.*"] });
    expect(byService.events[0]?.context).toEqual({ tenant: "t-1", user: "ann" });
    const seen: Context[] = [];
    const sub = await c.subscribeEvents({ topics: ["sec.*"], from: { time: 0 } }, (e) => {
      seen.push(e.context);
    });
    await waitFor(() => seen.length >= 1);
    await sub.stop();
    expect(seen[0]).toEqual({ tenant: "t-1", user: "ann" });
  });

  it("a persisted publish stores no secret context key, whatever eventContext says", async () => {
    const { c, t } = await client();
    class Billing {
      @publishToMesh({ contextTokenKey: "billingKey" })
      get(): string {
        return "ok";
      }
    }
    const service = createService({
      transport: mesh.transport(),
      name: "billing",
      instance: new Billing(),
      secretContextKeys: ["tenantSecretId"],
      eventContext: "full",
    });
    mesh.defer(() => service.disconnect());
    await service.connect();
    const context = {
      Authorization: "Bearer secret-token",
      billingKey: "b-1",
      tenantSecretId: "ts-1",
      refresh_token: "r-1",
      user: "ann",
    };
    await service.publishEvent("persec.x", 1, context, { persisted: true });
    await c.publishEvent("persec.y", 2, context, { persisted: true });
    // What the log itself holds (any reader of the broker sees it): no credential.
    const page = await (eventLogOf(t) as TransportEventLog).read({
      from: "start",
      topics: ["persec.*"],
      limit: 10,
    });
    expect(page.entries).toHaveLength(2);
    const stored = page.entries.map((e) => new TextDecoder().decode(e.frame.body));
    // The service leaves out its own secret keys (token keys, secretContextKeys) and every
    // credential-like key; a client, which knows no secret keys, the credential-like ones.
    expect(stored[0]).not.toMatch(/secret-token|b-1|ts-1|r-1/);
    expect(stored[1]).not.toMatch(/secret-token|ts-1|r-1/);
    expect(stored[1]).toMatch(/b-1/);
    expect(stored.every((b) => b.includes("ann"))).toBe(true);
  });

  it("a rare topic over a long log comes in bounded pages that advance, even empty ones", async () => {
    const { c, t } = await client();
    const log = eventLogOf(t) as TransportEventLog;
    const frame = (n: number) =>
      encodePayload({
        tag: "event",
        topic: "noise.x",
        event: n,
        context: {},
        trace_id: null,
        correlation_id: newId(),
        target: null,
      });
    await c.publishEvent("rare.x", "first", {}, { persisted: true });
    // More entries than the memory log scans in one read (10,000), none of them matching.
    for (let i = 0; i < 12_000; i++) await log.append("noise.x", frame(i));
    await c.publishEvent("rare.x", "second", {}, { persisted: true });
    const got: unknown[] = [];
    let after: string | undefined;
    let pages = 0;
    do {
      const page = await c.queryEvents({
        topics: ["rare.*"],
        ...(after === undefined ? {} : { after }),
      });
      got.push(...page.events.map((e) => e.event));
      after = page.cursor;
      pages++;
    } while (after !== undefined && pages < 10);
    expect(got).toEqual(["first", "second"]);
    expect(pages).toBeGreaterThan(1);
  });

  it("skips an entry it cannot read as an event, and reads plaintext events marked encrypted", async () => {
    const { c, t } = await client();
    const log = eventLogOf(t);
    if (log === undefined) throw new Error("memory has a log");
    await log.append("raw.bad", { headers: {}, body: new Uint8Array([1, 2]), correlationId: "x" });
    const frame = encodePayload({
      tag: "event",
      topic: "raw.good",
      event: { ok: true },
      context: {},
      trace_id: null,
      correlation_id: newId(),
      target: null,
    });
    // Python marks some plaintext events encrypted (PROTOCOL.md §7.4): they are read as plaintext.
    await log.append("raw.good", { ...frame, headers: { ...frame.headers, encrypted: "yes" } });
    const page = await c.queryEvents({ topics: ["raw.*"] });
    expect(page.events.map((e) => e.event)).toEqual([{ ok: true }]);
  });

  it("subscribeEvents replays, then goes live; resumes after a position", async () => {
    const { c } = await client();
    for (let i = 0; i < 3; i++) await c.publishEvent("sub.e", i);
    const got: StoredEvent[] = [];
    const first = await c.subscribeEvents({ topics: ["sub.*"], from: { time: 0 } }, (e) => {
      got.push(e);
    });
    await waitFor(() => got.length === 3);
    await c.publishEvent("sub.e", 3);
    await c.publishEvent("other.e", "no");
    await waitFor(() => got.length === 4);
    expect(got.map((e) => e.event)).toEqual([0, 1, 2, 3]);
    expect(first.lastPosition).toBe(got[3]?.position);
    await first.stop();
    expect(await first.ended()).toBeUndefined();
    await c.publishEvent("sub.e", 4);
    const resumed: unknown[] = [];
    const second = await c.subscribeEvents(
      { topics: ["sub.*"], from: { position: got[2]?.position as string } },
      (e) => {
        resumed.push(e.event);
      },
    );
    await waitFor(() => resumed.length === 2);
    expect(resumed).toEqual([3, 4]);
    const live: unknown[] = [];
    const fromNow = await c.subscribeEvents({ topics: ["sub.*"], from: "now" }, (e) => {
      live.push(e.event);
    });
    await c.publishEvent("sub.e", 5);
    await waitFor(() => live.length === 1 && resumed.length === 3);
    expect(live).toEqual([5]);
    // disconnect ends the subscriptions
    await c.disconnect();
    expect(await second.ended()).toBeUndefined();
    expect(await fromNow.ended()).toBeUndefined();
  });

  it("a handler that throws ends the subscription with its error", async () => {
    const { c } = await client();
    await c.publishEvent("boom.e", 1);
    const sub = await c.subscribeEvents({ topics: ["boom.*"], from: { time: 0 } }, () => {
      throw new Error("handler failed");
    });
    expect((await sub.ended())?.message).toBe("handler failed");
    expect(sub.lastPosition).toBeUndefined();
  });

  it("rejects with NuropbEventLogUnavailableError when the mesh has no log", async () => {
    const { c } = await client(false);
    for (const call of [
      () => c.queryEvents({ topics: ["x.*"] }),
      () => c.subscribeEvents({ topics: ["x.*"], from: "now" }, () => undefined),
      () => c.publishEvent("x.y", 1, {}, { persisted: true }),
    ]) {
      const err = await call().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(NuropbEventLogUnavailableError);
      expect(err).toBeInstanceOf(NuropbTransportError);
      expect((err as Error).message).toMatch(/not set up/);
    }
    // A plain publish still works without a log.
    await c.publishEvent("x.y", 1);
  });

  it("rejects with NuropbEventLogUnavailableError when the transport offers no log", async () => {
    const t = mesh.transport();
    const bare = new Proxy(t, {
      get: (target, prop) => {
        if (prop === "eventLog") return undefined;
        const value = Reflect.get(target, prop, target) as unknown;
        return typeof value === "function" ? (value as () => unknown).bind(target) : value;
      },
    });
    const c = createClient({ transport: bare });
    mesh.defer(() => c.disconnect());
    await c.connect();
    await expect(c.queryEvents({ topics: ["x.*"] })).rejects.toThrow(/offers no event log/);
    await expect(c.publishEvent("x.y", 1, {}, { persisted: true })).rejects.toBeInstanceOf(
      NuropbEventLogUnavailableError,
    );
  });

  it("rejects bad arguments before any I/O", async () => {
    const { c } = await client(false);
    const bad: [() => Promise<unknown>, ErrorConstructor | RangeErrorConstructor][] = [
      [() => c.queryEvents(undefined as never), TypeError],
      [() => c.queryEvents({ topics: [] }), TypeError],
      [() => c.queryEvents({ topics: ["a..b"] }), TypeError],
      [() => c.queryEvents({ topics: ["a.*"], limit: 0 }), RangeError],
      [() => c.queryEvents({ topics: ["a.*"], limit: MAX_EVENT_PAGE_LIMIT + 1 }), RangeError],
      [() => c.queryEvents({ topics: ["a.*"], limit: 1.5 }), RangeError],
      [() => c.queryEvents({ topics: ["a.*"], since: "yesterday" as never }), TypeError],
      [() => c.queryEvents({ topics: ["a.*"], since: 10, until: 5 }), RangeError],
      [() => c.queryEvents({ topics: ["a.*"], after: "" }), TypeError],
      [
        () => c.subscribeEvents({ topics: ["a.*"], from: "later" as never }, () => undefined),
        TypeError,
      ],
      [
        () => c.subscribeEvents({ topics: ["a.*"], from: { time: Number.NaN } }, () => undefined),
        TypeError,
      ],
      [() => c.subscribeEvents({ topics: ["a.*"], from: "now" }, "nope" as never), TypeError],
      [() => c.publishEvent("a.b", 1, {}, { persisted: "yes" as never }), TypeError],
    ];
    for (const [call, type] of bad) {
      const err = await call().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(type);
    }
  });

  it("rejects history calls before connect", async () => {
    const c = createClient({ transport: mesh.transport() });
    await expect(c.queryEvents({ topics: ["a.*"] })).rejects.toBeInstanceOf(NuropbTransportError);
  });
});

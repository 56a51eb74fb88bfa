import { afterEach, describe, expect, it } from "vitest";
import { NuropbTransportError, eventLogOf, newId } from "@nuropb/protocol";
import {
  NuropbEventLogUnavailableError,
  createClient,
  type MeshParticipant,
  type StoredEvent,
} from "@nuropb/core";
import type {
  Delivery,
  EventLogEntry,
  EventLogPosition,
  EventLogRetention,
  EventLogStart,
  Frame,
  Transport,
  TransportEventLog,
} from "@nuropb/protocol";
import {
  createCollector,
  delay,
  frameText,
  testHeaders,
  uniqueName,
  waitFor,
  withTimeout,
} from "./helpers.ts";

/** Options of {@link describeEventLogConformance}. */
export interface EventLogConformanceOptions {
  /** Shown in the suite title, e.g. `"redis"`. */
  readonly name: string;
  /**
   * A fresh, unconnected transport on a mesh the suite sets the event log up on (every call the
   * same broker and mesh). The suite connects and closes it.
   */
  readonly create: () => Transport | Promise<Transport>;
  /**
   * A fresh, unconnected transport on a mesh whose log is NOT set up (or a transport without the
   * capability): the history calls must fail with a typed error there.
   */
  readonly createWithoutLog: () => Transport | Promise<Transport>;
  /**
   * The retention the suite sets the log up with (generous: nothing the tests append may be
   * dropped by it). @defaultValue \{ maxAgeMs: 3600000, maxBytes: 268435456 \}
   */
  readonly retention?: EventLogRetention;
  /**
   * `maxBytes` of the retention scenario: the suite appends about eight times this much and
   * expects the oldest entries dropped, the newest kept. Size it to the log's granularity (a
   * RabbitMQ stream drops whole segments). The generous retention is restored afterwards.
   * @defaultValue 65536
   */
  readonly retentionTestBytes?: number;
  /** Longest wait for one expected outcome, in milliseconds. @defaultValue 10000 */
  readonly timeoutMs?: number;
  /**
   * How long the suite watches to show that something does NOT happen (a duplicate after the
   * hand-over), in milliseconds. @defaultValue 250
   */
  readonly quietMs?: number;
  /**
   * The pause between two batches whose timestamps must differ (time-range scenario), in
   * milliseconds; covers the log's clock resolution. @defaultValue 50
   */
  readonly clockStepMs?: number;
}

/**
 * Registers a vitest `describe` block with the behaviour every `transport.eventLog` (see
 * `TransportEventLog` in `@nuropb/protocol`) must show: setup and availability, append stores
 * and delivers, query by topic pattern and time range, paging, follow (catch-up then live, with
 * events appended during the hand-over: no gap, no duplicate), resume after a position, follow
 * from the end, retention by size, and the typed error on a mesh without a log; then the same
 * through core (`publishEvent(…, { persisted: true })`, `queryEvents`, `subscribeEvents`). Topics
 * are unique per test, so the suite can share a broker and a log with other tests.
 *
 * Call it at the top level of a test file.
 * @throws TypeError when an option is invalid.
 * @example
 * ```ts
 * describeEventLogConformance({
 *   name: "redis",
 *   create: () => createRedisTransport({ url, mesh: "history" }),
 *   createWithoutLog: () => createRedisTransport({ url, mesh: "no-history" }),
 * });
 * ```
 */
export function describeEventLogConformance(options: EventLogConformanceOptions): void {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("describeEventLogConformance needs an options object");
  }
  if (typeof options.name !== "string" || options.name === "") {
    throw new TypeError("options.name must be a non-empty string");
  }
  for (const key of ["create", "createWithoutLog"] as const) {
    if (typeof options[key] !== "function") {
      throw new TypeError(`options.${key} must be a function`);
    }
  }
  const s: Settings = {
    create: options.create,
    createWithoutLog: options.createWithoutLog,
    retention: options.retention ?? { maxAgeMs: 3_600_000, maxBytes: 256 * 1024 * 1024 },
    retentionTestBytes: options.retentionTestBytes ?? 65_536,
    timeoutMs: options.timeoutMs ?? 10_000,
    quietMs: options.quietMs ?? 250,
    clockStepMs: options.clockStepMs ?? 50,
  };
  for (const key of ["retentionTestBytes", "timeoutMs", "quietMs", "clockStepMs"] as const) {
    if (!Number.isFinite(s[key]) || s[key] <= 0) {
      throw new TypeError(`options.${key} must be a positive number`);
    }
  }
  describe(`event log conformance: ${options.name}`, () => registerSuite(s));
}

interface Settings {
  readonly create: () => Transport | Promise<Transport>;
  readonly createWithoutLog: () => Transport | Promise<Transport>;
  readonly retention: EventLogRetention;
  readonly retentionTestBytes: number;
  readonly timeoutMs: number;
  readonly quietMs: number;
  readonly clockStepMs: number;
}

/** An event frame as core would send it, told apart by its body text. */
function eventFrame(label: string, bodyBytes = 0): Frame {
  const text = bodyBytes > label.length ? label.padEnd(bodyBytes, ".") : label;
  return {
    headers: testHeaders("event", `trace-${label}`),
    body: new TextEncoder().encode(text),
    correlationId: newId(),
  };
}

function labelOf(entry: EventLogEntry): string {
  return frameText(entry.frame).replace(/\.+$/, "");
}

function registerSuite(s: Settings): void {
  const opened: Transport[] = [];
  const aborts: AbortController[] = [];
  const participants: MeshParticipant[] = [];

  afterEach(async () => {
    for (const a of aborts.splice(0)) a.abort();
    await Promise.allSettled(participants.splice(0).map((c) => c.disconnect()));
    await Promise.allSettled(opened.splice(0).map((t) => t.close()));
  });

  /** A connected transport with its log set up with the generous retention. */
  async function open(): Promise<{ transport: Transport; log: TransportEventLog }> {
    const transport = await s.create();
    opened.push(transport);
    await transport.connect();
    const log = eventLogOf(transport);
    if (log === undefined) throw new Error("the transport under test has no eventLog");
    await log.setup(s.retention);
    return { transport, log };
  }

  /** An abort controller that is aborted after the test at the latest. */
  function stopper(): AbortController {
    const controller = new AbortController();
    aborts.push(controller);
    return controller;
  }

  /** Appends the labels one after the other under `topic(label)`; their positions. */
  async function appendAll(
    log: TransportEventLog,
    labels: readonly string[],
    topic: (label: string) => string,
  ): Promise<EventLogPosition[]> {
    const out: EventLogPosition[] = [];
    for (const label of labels) out.push(await log.append(topic(label), eventFrame(label)));
    return out;
  }

  /** Every page from `from` (limit `limit`), concatenated. */
  async function readAll(
    log: TransportEventLog,
    from: EventLogStart,
    topics: readonly string[],
    limit = 1000,
    until?: number,
  ): Promise<EventLogEntry[]> {
    const out: EventLogEntry[] = [];
    let start = from;
    for (;;) {
      const page = await log.read({
        from: start,
        topics,
        limit,
        ...(until === undefined ? {} : { until }),
      });
      out.push(...page.entries);
      const last = page.entries.at(-1);
      if (!page.more || last === undefined) return out;
      start = { after: last.position };
    }
  }

  /** Follows from `from` in the background, collecting labels until the signal aborts. */
  function followInto(
    log: TransportEventLog,
    from: EventLogStart,
    topics: readonly string[],
    stop: AbortSignal,
  ): { entries: EventLogEntry[]; done: Promise<void> } {
    const entries: EventLogEntry[] = [];
    const done = (async () => {
      for await (const entry of log.follow({ from, topics, signal: stop })) entries.push(entry);
    })();
    return { entries, done };
  }

  const t = { timeout: s.timeoutMs * 3 };

  it("sets up idempotently, reports available, and stores what append sends", t, async () => {
    const { log } = await open();
    await log.setup(s.retention);
    expect(await log.available()).toBe(true);
    const p = uniqueName();
    const frame: Frame = {
      headers: { ...testHeaders("event", "trace-x"), custom: "välue" },
      body: new Uint8Array([0, 1, 2, 250, 255]),
      correlationId: newId(),
    };
    const marker = await log.append(`${p}.marker`, eventFrame("marker"));
    const stored = await log.append(`${p}.one`, frame);
    expect(typeof stored.position).toBe("string");
    expect(stored.position).not.toBe(marker.position);
    expect(stored.timestamp).toBeGreaterThanOrEqual(marker.timestamp);
    expect(Math.abs(stored.timestamp - Date.now())).toBeLessThan(60_000);
    const page = await log.read({
      from: { after: marker.position },
      topics: [`${p}.#`],
      limit: 10,
    });
    expect(page.more).toBe(false);
    expect(page.entries).toHaveLength(1);
    const entry = page.entries[0] as EventLogEntry;
    expect(entry.position).toBe(stored.position);
    expect(entry.timestamp).toBe(stored.timestamp);
    expect(entry.topic).toBe(`${p}.one`);
    expect(entry.frame.headers).toEqual(frame.headers);
    expect([...entry.frame.body]).toEqual([...frame.body]);
    expect(entry.frame.correlationId).toBe(frame.correlationId);
  });

  it("delivers appended events to bound queues and stores events sent with send", t, async () => {
    const { transport, log } = await open();
    const p = uniqueName();
    const got = createCollector<Delivery>("event deliveries");
    await transport.consumeService(
      { service: `${p}-svc`, rpcBindings: [], eventBindings: [`${p}.*`], prefetch: 10 },
      async (d) => {
        got.push(d);
        await d.ack();
      },
    );
    const marker = await log.append(`${p}.marker`, eventFrame("marker"));
    await log.append(`${p}.appended`, eventFrame("appended"));
    await transport.send({ kind: "event", topic: `${p}.sent` }, eventFrame("sent"));
    await got.waitForCount(3, s.timeoutMs);
    expect(got.items.map((d) => frameText(d))).toEqual(["marker", "appended", "sent"]);
    await waitFor(
      async () => (await readAll(log, { after: marker.position }, [`${p}.*`])).length === 2,
      s.timeoutMs,
      "the sent event in the log",
    );
    const entries = await readAll(log, { after: marker.position }, [`${p}.*`]);
    expect(entries.map(labelOf)).toEqual(["appended", "sent"]);
    expect(entries.map((e) => e.topic)).toEqual([`${p}.appended`, `${p}.sent`]);
  });

  it("reads by topic pattern, in log order", t, async () => {
    const { log } = await open();
    const p = uniqueName();
    const marker = await log.append(`${p}.marker`, eventFrame("marker"));
    const topics: Record<string, string> = {
      a1: `${p}.orders.created`,
      b1: `${p}.users.created`,
      a2: `${p}.orders.shipped`,
      c1: `${p}.orders.shipped.late`,
      b2: `${p}.users.deleted`,
    };
    await appendAll(log, Object.keys(topics), (l) => topics[l] as string);
    const from = { after: marker.position };
    expect((await readAll(log, from, [`${p}.orders.*`])).map(labelOf)).toEqual(["a1", "a2"]);
    expect((await readAll(log, from, [`${p}.orders.#`])).map(labelOf)).toEqual(["a1", "a2", "c1"]);
    expect(
      (await readAll(log, from, [`${p}.*.created`, `${p}.users.deleted`])).map(labelOf),
    ).toEqual(["a1", "b1", "b2"]);
    expect((await readAll(log, from, [`${p}.#`])).map(labelOf)).toEqual([
      "a1",
      "b1",
      "a2",
      "c1",
      "b2",
    ]);
    expect(await readAll(log, from, [`${p}.nothing.*`])).toEqual([]);
  });

  it("reads a time range: from a time, until a time", t, async () => {
    const { log } = await open();
    const p = uniqueName();
    const topic = (l: string): string => `${p}.${l}`;
    const early = await appendAll(log, ["e1", "e2"], topic);
    await delay(s.clockStepMs);
    const late = await appendAll(log, ["l1", "l2"], topic);
    const lateStart = (late[0] as EventLogPosition).timestamp;
    expect(lateStart).toBeGreaterThan((early[1] as EventLogPosition).timestamp);
    const earlyStart = (early[0] as EventLogPosition).timestamp;
    expect((await readAll(log, { time: lateStart }, [`${p}.*`])).map(labelOf)).toEqual([
      "l1",
      "l2",
    ]);
    expect(
      (await readAll(log, { time: earlyStart }, [`${p}.*`], 1000, lateStart)).map(labelOf),
    ).toEqual(["e1", "e2"]);
    const page = await log.read({ from: { time: earlyStart }, topics: [`${p}.*`], limit: 10 });
    expect(page.entries.map(labelOf)).toEqual(["e1", "e2", "l1", "l2"]);
    expect(page.entries.map((e) => e.timestamp)).toEqual(
      [...early, ...late].map((x) => x.timestamp),
    );
  });

  it("pages: limit bounds a page, `more` says whether entries follow", t, async () => {
    const { log } = await open();
    const p = uniqueName();
    const marker = await log.append(`${p}.marker`, eventFrame("marker"));
    const labels = ["m1", "m2", "m3", "m4", "m5", "m6", "m7"];
    await appendAll(log, labels, (l) => `${p}.x.${l}`);
    const topics = [`${p}.x.*`];
    const first = await log.read({ from: { after: marker.position }, topics, limit: 3 });
    expect(first.entries.map(labelOf)).toEqual(["m1", "m2", "m3"]);
    expect(first.more).toBe(true);
    const after = (page: typeof first): EventLogStart => ({
      after: (page.entries.at(-1) as EventLogEntry).position,
    });
    const second = await log.read({ from: after(first), topics, limit: 3 });
    expect(second.entries.map(labelOf)).toEqual(["m4", "m5", "m6"]);
    expect(second.more).toBe(true);
    const third = await log.read({ from: after(second), topics, limit: 3 });
    expect(third.entries.map(labelOf)).toEqual(["m7"]);
    expect(third.more).toBe(false);
    const exact = await log.read({ from: after(second), topics, limit: 1 });
    expect(exact.entries.map(labelOf)).toEqual(["m7"]);
    expect(exact.more).toBe(false);
    const end = await log.read({ from: "end", topics, limit: 3 });
    expect(end.entries).toEqual([]);
    expect(end.more).toBe(false);
  });

  it(
    "follows: catch-up, then live, with appends during the hand-over (no gap, no duplicate)",
    t,
    async () => {
      const { log } = await open();
      const p = uniqueName();
      const topics = [`${p}.#`];
      const marker = await log.append(`${p}.marker`, eventFrame("marker"));
      const before = Array.from({ length: 10 }, (_, i) => `b${i}`);
      const during = Array.from({ length: 30 }, (_, i) => `d${i}`);
      await appendAll(log, before, (l) => `${p}.e.${l}`);
      const stop = stopper();
      // The appends start together with the follow, so they land while it catches up and hands
      // over to live reading.
      const appending = appendAll(log, during, (l) => `${p}.e.${l}`);
      const follower = followInto(log, { after: marker.position }, topics, stop.signal);
      await appending;
      const expected = [...before, ...during];
      await waitFor(
        () => follower.entries.length >= expected.length,
        s.timeoutMs,
        `${expected.length} followed entries`,
      );
      await delay(s.quietMs);
      expect(follower.entries.map(labelOf)).toEqual(expected);
      expect(new Set(follower.entries.map((e) => e.position)).size).toBe(expected.length);
      // Live again after a quiet spell.
      await log.append(`${p}.e.late`, eventFrame("late"));
      await waitFor(() => follower.entries.length > expected.length, s.timeoutMs, "a live entry");
      expect(follower.entries.map(labelOf).slice(expected.length)).toEqual(["late"]);
      stop.abort();
      await follower.done;
    },
  );

  it("resumes after the last position processed, and follows from the end", t, async () => {
    const { log } = await open();
    const p = uniqueName();
    const topics = [`${p}.*`];
    const marker = await log.append(`${p}.marker`, eventFrame("marker"));
    const labels = ["r1", "r2", "r3", "r4", "r5"];
    await appendAll(log, labels, (l) => `${p}.${l}`);
    // A participant processes three entries, then stops (restarts).
    const processed: EventLogEntry[] = [];
    const first = new AbortController();
    for await (const entry of log.follow({
      from: { after: marker.position },
      topics,
      signal: first.signal,
    })) {
      processed.push(entry);
      if (processed.length === 3) first.abort();
    }
    expect(processed.map(labelOf)).toEqual(["r1", "r2", "r3"]);
    const resumed = followInto(
      log,
      { after: (processed[2] as EventLogEntry).position },
      topics,
      stopper().signal,
    );
    const fromEnd = followInto(log, "end", topics, stopper().signal);
    await delay(s.quietMs);
    await log.append(`${p}.r6`, eventFrame("r6"));
    await waitFor(() => resumed.entries.length >= 3, s.timeoutMs, "the resumed entries");
    await waitFor(() => fromEnd.entries.length >= 1, s.timeoutMs, "the live entry");
    await delay(s.quietMs);
    expect(resumed.entries.map(labelOf)).toEqual(["r4", "r5", "r6"]);
    expect(fromEnd.entries.map(labelOf)).toEqual(["r6"]);
  });

  it("head(): read and follow from it give exactly what is appended after it", t, async () => {
    const { log } = await open();
    const p = uniqueName();
    const topics = [`${p}.*`];
    await log.append(`${p}.before`, eventFrame("before"));
    const head = await log.head();
    // No pause: what is appended once head() resolved is after it.
    await log.append(`${p}.after`, eventFrame("after"));
    const follower = followInto(log, head, topics, stopper().signal);
    await waitFor(() => follower.entries.length >= 1, s.timeoutMs, "the entry after head()");
    expect((await readAll(log, head, topics)).map(labelOf)).toEqual(["after"]);
    await delay(s.quietMs);
    expect(follower.entries.map(labelOf)).toEqual(["after"]);
  });

  it("ends a follow when its signal aborts or the transport closes", t, async () => {
    const { transport, log } = await open();
    const p = uniqueName();
    const stop = stopper();
    const aborted = followInto(log, "end", [`${p}.*`], stop.signal);
    const closing = followInto(log, "end", [`${p}.*`], new AbortController().signal);
    await delay(s.quietMs);
    stop.abort();
    await withTimeout(aborted.done, s.timeoutMs, "the aborted follow to end");
    await transport.close();
    // Ends (or fails with the closed error): either way it does not hang.
    await withTimeout(
      closing.done.catch(() => undefined),
      s.timeoutMs,
      "the follow to end when the transport closes",
    );
    expect(aborted.entries).toEqual([]);
  });

  it("drops the oldest entries beyond the size retention, keeps the newest", t, async () => {
    const { log } = await open();
    const p = uniqueName();
    const marker = await log.append(`${p}.marker`, eventFrame("marker"));
    const bodyBytes = 1024;
    const count = Math.ceil((s.retentionTestBytes * 8) / bodyBytes);
    try {
      await log.setup({ maxAgeMs: s.retention.maxAgeMs, maxBytes: s.retentionTestBytes });
      const labels = Array.from({ length: count }, (_, i) => `s${i}`);
      for (const label of labels) await log.append(`${p}.s`, eventFrame(label, bodyBytes));
      const kept = await readAll(log, { after: marker.position }, [`${p}.s`]);
      const keptLabels = kept.map(labelOf);
      expect(keptLabels.length).toBeGreaterThan(0);
      expect(keptLabels.length).toBeLessThan(count);
      expect(keptLabels.at(-1)).toBe(labels.at(-1));
      expect(keptLabels).not.toContain("s0");
      // What is kept is a contiguous tail: nothing in the middle was lost.
      expect(keptLabels).toEqual(labels.slice(count - keptLabels.length));
      // The log still takes and serves new events after dropping old ones.
      const next = await log.append(`${p}.s`, eventFrame("again"));
      const last = await log.read({ from: { time: next.timestamp }, topics: [`${p}.s`], limit: 5 });
      expect(last.entries.map(labelOf)).toContain("again");
    } finally {
      await log.setup(s.retention);
    }
  });

  it("fails with a typed error on a mesh without a log", t, async () => {
    const transport = await s.createWithoutLog();
    opened.push(transport);
    await transport.connect();
    const log = eventLogOf(transport);
    if (log === undefined) return; // no capability at all: core's history API reports it
    expect(await log.available()).toBe(false);
    const p = uniqueName();
    const error = await log.append(`${p}.x`, eventFrame("x")).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(NuropbTransportError);
    expect((error as Error).message).toMatch(/not set up/);
    await expect(log.read({ from: "start", topics: [`${p}.*`], limit: 1 })).rejects.toBeInstanceOf(
      NuropbTransportError,
    );
    expect(await log.available()).toBe(false);
  });

  /** A connected client on a transport whose log is set up. */
  async function openClient(): Promise<MeshParticipant> {
    const { transport } = await open();
    const client = createClient({ transport });
    participants.push(client);
    await client.connect();
    return client;
  }

  it(
    "core: persisted publish, queryEvents by pattern and time, pages with a cursor",
    t,
    async () => {
      const client = await openClient();
      const p = uniqueName();
      await client.publishEvent(`${p}.start`, "start", {}, { persisted: true });
      await delay(s.clockStepMs);
      for (let i = 0; i < 5; i++) {
        await client.publishEvent(
          `${p}.orders.${i % 2 === 0 ? "created" : "shipped"}`,
          { i },
          { Authorization: "Bearer do-not-leak", user: "ann" },
          { persisted: true, traceId: `trace-${i}` },
        );
      }
      const all = await client.queryEvents({ topics: [`${p}.#`] });
      expect(all.cursor).toBeUndefined();
      expect(all.events.map((e) => e.event)).toEqual([
        "start",
        ...[0, 1, 2, 3, 4].map((i) => ({ i })),
      ]);
      const created: unknown[] = [];
      let after: string | undefined;
      let pages = 0;
      const since = (all.events[1] as StoredEvent).timestamp;
      do {
        const page = await client.queryEvents({
          topics: [`${p}.orders.created`],
          since,
          limit: 2,
          ...(after === undefined ? {} : { after }),
        });
        pages++;
        for (const e of page.events) {
          expect(e.context).toEqual({ user: "ann" });
          expect(e.traceId).toBe(`trace-${(e.event as { i: number }).i}`);
          created.push(e.event);
        }
        after = page.cursor;
      } while (after !== undefined);
      expect(created).toEqual([{ i: 0 }, { i: 2 }, { i: 4 }]);
      expect(pages).toBe(2);
      const before = await client.queryEvents({ topics: [`${p}.#`], until: since });
      expect(before.events.map((e) => e.event)).toEqual(["start"]);
    },
  );

  it(
    "core: events published without persisted have the log's time: ranges and cursor pages",
    t,
    async () => {
      const client = await openClient();
      const p = uniqueName();
      const topics = [`${p}.#`];
      // Plain publishes (no append): what Python peers and handlers send.
      for (const e of ["e1", "e2"]) await client.publishEvent(`${p}.x`, e);
      await delay(s.clockStepMs);
      for (const e of ["l1", "l2", "l3", "l4"]) await client.publishEvent(`${p}.x`, e);
      await waitFor(
        async () => (await client.queryEvents({ topics })).events.length === 6,
        s.timeoutMs,
        "the six published events in the log",
      );
      const all = (await client.queryEvents({ topics })).events;
      const stamps = all.map((e) => e.timestamp);
      for (const ts of stamps) expect(Math.abs(ts - Date.now())).toBeLessThan(60_000);
      expect([...stamps].sort((a, b) => a - b)).toEqual(stamps);
      const lateStart = (all[2] as StoredEvent).timestamp;
      expect(lateStart).toBeGreaterThan((all[1] as StoredEvent).timestamp);
      const late: unknown[] = [];
      let after: string | undefined;
      let pages = 0;
      do {
        const page = await client.queryEvents({
          topics,
          since: lateStart,
          limit: 2,
          ...(after === undefined ? {} : { after }),
        });
        pages++;
        late.push(...page.events.map((e) => e.event));
        after = page.cursor;
      } while (after !== undefined && pages < 10);
      expect(late).toEqual(["l1", "l2", "l3", "l4"]);
      const early = await client.queryEvents({ topics, until: lateStart });
      expect(early.events.map((e) => e.event)).toEqual(["e1", "e2"]);
    },
  );

  it(
    "core: subscribeEvents catches up, then live, with publishes during the hand-over",
    t,
    async () => {
      const client = await openClient();
      const publisher = await openClient();
      const p = uniqueName();
      await publisher.publishEvent(`${p}.marker`, "marker", {}, { persisted: true });
      const marker = (await publisher.queryEvents({ topics: [`${p}.marker`] }))
        .events[0] as StoredEvent;
      for (let i = 0; i < 10; i++) await publisher.publishEvent(`${p}.e`, i);
      const got: StoredEvent[] = [];
      const publishing = (async () => {
        for (let i = 10; i < 40; i++) await publisher.publishEvent(`${p}.e`, i);
      })();
      const sub = await client.subscribeEvents(
        { topics: [`${p}.e`], from: { position: marker.position } },
        (e) => {
          got.push(e);
        },
      );
      await publishing;
      await waitFor(() => got.length >= 40, s.timeoutMs, "40 events through subscribeEvents");
      await delay(s.quietMs);
      expect(got.map((e) => e.event)).toEqual(Array.from({ length: 40 }, (_, i) => i));
      expect(sub.lastPosition).toBe(got.at(-1)?.position);
      await sub.stop();
      expect(await sub.ended()).toBeUndefined();
      // A restart resumes after the last position processed.
      await publisher.publishEvent(`${p}.e`, 40);
      const resumed: unknown[] = [];
      const again = await client.subscribeEvents(
        { topics: [`${p}.e`], from: { position: (got[37] as StoredEvent).position } },
        (e) => {
          resumed.push(e.event);
        },
      );
      await waitFor(() => resumed.length >= 3, s.timeoutMs, "the resumed events");
      await delay(s.quietMs);
      expect(resumed).toEqual([38, 39, 40]);
      await again.stop();
    },
  );

  it(
    "core: subscribeEvents from now gets an event published right after it resolves",
    t,
    async () => {
      const client = await openClient();
      const p = uniqueName();
      await client.publishEvent(`${p}.e`, "old", {}, { persisted: true });
      const got: unknown[] = [];
      const sub = await client.subscribeEvents({ topics: [`${p}.e`], from: "now" }, (e) => {
        got.push(e.event);
      });
      // No pause between the subscription and the publish.
      await client.publishEvent(`${p}.e`, "new", {}, { persisted: true });
      await waitFor(() => got.length >= 1, s.timeoutMs, "the event published after subscribing");
      await delay(s.quietMs);
      expect(got).toEqual(["new"]);
      await sub.stop();
    },
  );

  it("core: a position that is not one of the log's is refused at once", t, async () => {
    const client = await openClient();
    const p = uniqueName();
    const log = eventLogOf((await open()).transport) as TransportEventLog;
    const stored = await log.append(`${p}.x`, eventFrame("x"));
    expect(log.isPosition(stored.position)).toBe(true);
    for (const bad of ["not-a-position", "", "-1"]) expect(log.isPosition(bad)).toBe(false);
    await expect(
      client.subscribeEvents(
        { topics: [`${p}.*`], from: { position: "not-a-position" } },
        () => undefined,
      ),
    ).rejects.toBeInstanceOf(TypeError);
    await expect(
      client.queryEvents({ topics: [`${p}.*`], after: "not-a-position" }),
    ).rejects.toBeInstanceOf(TypeError);
  });

  it(
    "core: the history API rejects with NuropbEventLogUnavailableError without a log",
    t,
    async () => {
      const transport = await s.createWithoutLog();
      opened.push(transport);
      const client = createClient({ transport });
      await client.connect();
      const p = uniqueName();
      for (const call of [
        () => client.queryEvents({ topics: [`${p}.*`] }),
        () => client.subscribeEvents({ topics: [`${p}.*`], from: "now" }, () => undefined),
        () => client.publishEvent(`${p}.x`, 1, {}, { persisted: true }),
      ]) {
        await expect(call()).rejects.toBeInstanceOf(NuropbEventLogUnavailableError);
      }
      await client.publishEvent(`${p}.x`, 1);
      await client.disconnect();
    },
  );
}

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  NuropbAuthorizationError,
  NuropbError,
  NuropbTimeoutError,
  NuropbValidationError,
  type DeliveryHandler,
  type EventType,
  type ServiceQueueSpec,
  type Frame,
  type Transport,
  type TransportScheduling,
} from "@nuropb/protocol";
import {
  FailureHeader,
  createClient,
  createService,
  failureRecordOf,
  publishToMesh,
  type FailurePolicy,
} from "@nuropb/core";
import { createServiceKeys } from "@nuropb/crypto";
import { createMesh, waitFor } from "./helpers.ts";

/** A transport whose scheduling records each delay before handing the frame to the real one. */
function recording(t: Transport): {
  transport: Transport;
  delays: number[];
  frames: Frame[];
} {
  const real = t.scheduling as TransportScheduling;
  const delays: number[] = [];
  const frames: Frame[] = [];
  const scheduling: TransportScheduling = {
    serviceReplyAddress: (s) => real.serviceReplyAddress(s),
    openClaim: (k, ms) => real.openClaim(k, ms),
    claim: (k, taker) => real.claim(k, taker),
    sendDelayed: (service, frame, delayMs) => {
      delays.push(delayMs);
      frames.push(frame);
      return real.sendDelayed(service, frame, delayMs);
    },
  };
  return { transport: withScheduling(t, scheduling), delays, frames };
}

/** `t` as seen through a proxy whose `scheduling` is `scheduling` (undefined: none). */
function withScheduling(t: Transport, scheduling: TransportScheduling | undefined): Transport {
  return new Proxy(t, {
    get(target, prop) {
      if (prop === "scheduling") return scheduling;
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

class Flaky extends Error {
  constructor() {
    super("flaky dependency");
    this.name = "Flaky";
  }
}

class Jobs {
  runs: Record<string, number> = {};
  /** The run (1-based, per method) from which a method succeeds. */
  succeedFrom = Number.POSITIVE_INFINITY;
  error: () => unknown = () => new NuropbError("database busy", { retryable: true });
  events: EventType[] = [];
  eventRuns = 0;

  #fail(method: string): string {
    const n = (this.runs[method] = (this.runs[method] ?? 0) + 1);
    if (n >= this.succeedFrom) return `done after ${String(n)}`;
    throw this.error();
  }
  work(): string {
    return this.#fail("work");
  }
  @publishToMesh({ failurePolicy: { immediateRetries: 3 } })
  ownPolicy(): string {
    return this.#fail("ownPolicy");
  }
  @publishToMesh({ failurePolicy: false })
  noPolicy(): string {
    return this.#fail("noPolicy");
  }
  handleEvent(event: EventType): void {
    this.eventRuns++;
    if (this.eventRuns < this.succeedFrom) throw this.error();
    this.events.push(event);
  }
}

class Watcher {
  faults: EventType[] = [];
  handleEvent(event: EventType): void {
    this.faults.push(event);
  }
}

describe("the failure pipeline on the memory transport", () => {
  let mesh: ReturnType<typeof createMesh>;
  let jobs: Jobs;
  let delays: number[];
  let frames: Frame[];
  let client: ReturnType<typeof createClient>;

  beforeEach(async () => {
    mesh = createMesh();
    jobs = new Jobs();
    client = createClient({ transport: mesh.transport(), defaultTtlMs: 5_000 });
    await client.connect();
    mesh.defer(() => client.disconnect());
  });
  afterEach(async () => {
    await mesh.cleanup();
  });

  async function serve(failurePolicy?: FailurePolicy, eventBindings: string[] = []): Promise<void> {
    const rec = recording(mesh.transport());
    delays = rec.delays;
    frames = rec.frames;
    const service = createService({
      transport: rec.transport,
      name: "jobs",
      instance: jobs,
      eventBindings,
      ...(failurePolicy === undefined ? {} : { failurePolicy }),
    });
    await service.connect();
    mesh.defer(() => service.disconnect());
  }

  const deadLetters = () => mesh.hub.deadLetters();

  it("keeps today's behaviour without a policy: one run, a plain dead letter", async () => {
    await serve();
    await client.command("jobs", "work", {});
    await waitFor(() => deadLetters().length === 1, 2000, "the dead letter");
    expect(jobs.runs.work).toBe(1);
    expect(failureRecordOf(deadLetters()[0]!.frame.headers)).toBeUndefined();
    expect(delays).toEqual([]);
    await expect(client.request("jobs", "work", {})).rejects.toThrow(/database busy/);
    expect(jobs.runs.work).toBe(2);
  });

  it("retries a retryable failure at once, bounded, then dead-letters it with its record", async () => {
    await serve({ immediateRetries: 2 });
    const before = new Date().toISOString();
    await client.command("jobs", "work", {}, {}, { traceId: "t-1" });
    await waitFor(() => deadLetters().length === 1, 2000, "the dead letter");
    expect(jobs.runs.work).toBe(3);
    const dl = deadLetters()[0]!;
    expect(dl.reason).toBe("rejected");
    const record = failureRecordOf(dl.frame.headers);
    expect(record).toMatchObject({
      error: "NuropbException",
      description: "database busy",
      service: "jobs",
      method: "work",
      attempts: 3,
      redeliveries: 0,
    });
    expect(record!.firstFailureAt >= before).toBe(true);
    expect(record!.lastFailureAt >= record!.firstFailureAt).toBe(true);
    // The message itself is intact: a copy of what was sent, plus the record.
    expect(dl.frame.headers.trace_id).toBe("t-1");
    expect(delays).toEqual([]);
  });

  it("does not retry an error that is not retryable", async () => {
    jobs.error = () => new NuropbValidationError("bad order");
    await serve({ immediateRetries: 5, delays: [1] });
    await expect(client.request("jobs", "work", {})).rejects.toThrow(NuropbValidationError);
    expect(jobs.runs.work).toBe(1);
    expect(delays).toEqual([]);
    expect(failureRecordOf(deadLetters()[0]!.frame.headers)).toMatchObject({
      error: "NuropbValidationError",
      attempts: 1,
    });
  });

  it("asks the retryable predicate, which alone decides, about the error as thrown", async () => {
    jobs.error = () => new Flaky();
    const seen: unknown[] = [];
    await serve({
      immediateRetries: 2,
      retryable: (err) => {
        seen.push(err);
        return err instanceof Flaky;
      },
    });
    await client.command("jobs", "work", {});
    await waitFor(() => deadLetters().length === 1, 2000, "the dead letter");
    expect(jobs.runs.work).toBe(3);
    expect(seen.every((e) => e instanceof Flaky)).toBe(true);
    expect(failureRecordOf(deadLetters()[0]!.frame.headers)?.description).toMatch(
      /Runtime exception calling jobs.work:Flaky: flaky dependency/,
    );
    // Marked retryable, but the predicate says no.
    jobs.error = () => new NuropbError("marked", { retryable: true });
    jobs.runs = {};
    mesh.hub.clearDeadLetters();
    await client.command("jobs", "work", {});
    await waitFor(() => deadLetters().length === 1, 2000, "the second dead letter");
    expect(jobs.runs.work).toBe(1);
  });

  it("never retries validation or authorisation errors, or an unknown method, even with a predicate", async () => {
    await serve({ immediateRetries: 3, delays: [1], retryable: () => true });
    jobs.error = () => new NuropbValidationError("bad order");
    await expect(client.request("jobs", "work", {})).rejects.toThrow(NuropbValidationError);
    expect(jobs.runs.work).toBe(1);
    jobs.runs = {};
    jobs.error = () => new NuropbAuthorizationError("not yours");
    await expect(client.request("jobs", "work", {})).rejects.toThrow(NuropbAuthorizationError);
    expect(jobs.runs.work).toBe(1);
    await expect(client.request("jobs", "noSuchMethod", {})).rejects.toThrow(/Unknown method/);
    expect(delays).toEqual([]);
    expect(deadLetters().map((d) => failureRecordOf(d.frame.headers)?.attempts)).toEqual([1, 1, 1]);
    // The predicate still decides for everything else.
    jobs.runs = {};
    jobs.error = () => new Flaky();
    await client.command("jobs", "work", {});
    await waitFor(() => deadLetters().length === 4, 2000, "the fourth dead letter");
    expect(jobs.runs.work).toBe(8);
    expect(delays).toEqual([1]);
  });

  it("warns at createService when a policy's delays outlast the default command ttl", () => {
    const warnings: [string, Record<string, unknown> | undefined][] = [];
    const logger = {
      debug: () => undefined,
      info: () => undefined,
      warn: (msg: string, fields?: Record<string, unknown>) => void warnings.push([msg, fields]),
      error: () => undefined,
      child: () => logger,
    };
    createService({
      transport: mesh.transport(),
      name: "slow",
      instance: jobs,
      logger,
      failurePolicy: { delays: [1_000, 10_000, 60_000] },
    });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]![0]).toMatch(/default ttl/);
    expect(warnings[0]![1]).toMatchObject({ service: "slow", totalDelayMs: 71_000 });
    createService({
      transport: mesh.transport(),
      name: "quick",
      instance: jobs,
      logger,
      failurePolicy: { delays: [1_000, 10_000] },
    });
    expect(warnings).toHaveLength(1);
  });

  it("redelivers later through the scheduling capability with backoff, then dead-letters", async () => {
    await serve({ immediateRetries: 1, delays: [3, 6] });
    await client.command("jobs", "work", {});
    await waitFor(() => deadLetters().length === 1, 3000, "the dead letter");
    // Two runs per delivery (one immediate retry), three deliveries.
    expect(jobs.runs.work).toBe(6);
    expect(delays).toEqual([3, 6]);
    expect(frames.map((f) => f.headers[FailureHeader.redeliveries])).toEqual(["1", "2"]);
    expect(frames.map((f) => f.headers[FailureHeader.attempts])).toEqual(["2", "4"]);
    const record = failureRecordOf(deadLetters()[0]!.frame.headers);
    expect(record).toMatchObject({ attempts: 6, redeliveries: 2, method: "work" });
    expect(record!.firstFailureAt).toBe(frames[0]!.headers[FailureHeader.firstAt]);
    expect(mesh.hub.queueDepth("nuropb-jobs-sq")).toBe(0);
  });

  it("answers a request once a delayed redelivery succeeds", async () => {
    jobs.succeedFrom = 3;
    await serve({ delays: [2, 2, 2] });
    await expect(client.request("jobs", "work", {})).resolves.toBe("done after 3");
    expect(delays).toEqual([2, 2]);
    expect(deadLetters()).toEqual([]);
  });

  it("answers an encrypted request from a delayed redelivery (the copy is opened again)", async () => {
    const keys = createServiceKeys({ nacl: true });
    jobs.succeedFrom = 2;
    const rec = recording(mesh.transport());
    const service = createService({
      transport: rec.transport,
      name: "jobs",
      instance: jobs,
      keys,
      failurePolicy: { delays: [2] },
    });
    await service.connect();
    mesh.defer(() => service.disconnect());
    await expect(client.request("jobs", "work", {}, {}, { encrypted: true })).resolves.toBe(
      "done after 2",
    );
    expect(rec.frames[0]!.headers.encrypted).toBe("yes");
    expect(deadLetters()).toEqual([]);
  });

  it("fails a request at once when its ttl passes before the next delivery", async () => {
    await serve({ delays: [60_000] });
    await expect(client.request("jobs", "work", {}, {}, { ttlMs: 1_000 })).rejects.toThrow(
      /database busy/,
    );
    expect(delays).toEqual([]);
    expect(failureRecordOf(deadLetters()[0]!.frame.headers)).toMatchObject({ attempts: 1 });
  });

  /** A client whose frames to `jobs` carry `extra` headers (as any sender could set them). */
  async function forgingClient(extra: Record<string, string>) {
    const t = mesh.transport();
    const forging = new Proxy(t, {
      get(target, prop) {
        if (prop === "send") {
          return (to: Parameters<Transport["send"]>[0], frame: Frame) =>
            target.send(to, { ...frame, headers: { ...frame.headers, ...extra } });
        }
        const v: unknown = Reflect.get(target, prop, target);
        return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const c = createClient({ transport: forging, defaultTtlMs: 5_000 });
    await c.connect();
    mesh.defer(() => c.disconnect());
    return c;
  }

  it("ignores failure counters a sender set on a first delivery", async () => {
    await serve({ delays: [1, 1, 1] });
    const forger = await forgingClient({ [FailureHeader.redeliveries]: "3" });
    await forger.command("jobs", "work", {});
    await waitFor(() => deadLetters().length === 1, 2000, "the dead letter");
    expect(jobs.runs.work).toBe(4);
    expect(delays).toEqual([1, 1, 1]);
    expect(failureRecordOf(deadLetters()[0]!.frame.headers)).toMatchObject({
      attempts: 4,
      redeliveries: 3,
    });
  });

  it("ignores a whole forged record out of the policy's bounds, and an overlong first_at", async () => {
    await serve({ delays: [1] });
    const forger = await forgingClient({
      [FailureHeader.service]: "jobs",
      [FailureHeader.method]: "work",
      [FailureHeader.error]: "NuropbException",
      [FailureHeader.redeliveries]: "99",
      [FailureHeader.attempts]: "99",
      [FailureHeader.firstAt]: "2026-01-01T00:00:00.000Z" + "x".repeat(200_000),
      [FailureHeader.lastAt]: "2026-01-01T00:00:00.000Z",
    });
    const before = new Date().toISOString();
    await forger.command("jobs", "work", {});
    await waitFor(() => deadLetters().length === 1, 2000, "the dead letter");
    expect(delays).toEqual([1]);
    const record = failureRecordOf(deadLetters()[0]!.frame.headers)!;
    expect(record).toMatchObject({ attempts: 2, redeliveries: 1 });
    expect(record.firstFailureAt.length).toBeLessThanOrEqual(40);
    expect(record.firstFailureAt >= before).toBe(true);
  });

  it("ignores a deadline header on an event: its delayed redeliveries still run", async () => {
    jobs.succeedFrom = 2;
    await serve({ delays: [1] }, ["orders.*"]);
    const forger = await forgingClient({ [FailureHeader.deadline]: "1" });
    await forger.publishEvent("orders.created", { id: 1 });
    await waitFor(() => jobs.events.length === 1, 2000, "the event handled");
    expect(delays).toEqual([1]);
    expect(deadLetters()).toEqual([]);
  });

  it("dead-letters a delayed copy that arrives after its caller's ttl as expired, unrun", async () => {
    const t = mesh.transport();
    const real = t.scheduling as TransportScheduling;
    // The broker delivers later than asked (a backlog, a bucket rounded up).
    const late = withScheduling(t, {
      ...real,
      sendDelayed: (service, frame) => real.sendDelayed(service, frame, 400),
    });
    const service = createService({
      transport: late,
      name: "jobs",
      instance: jobs,
      failurePolicy: { delays: [1] },
    });
    await service.connect();
    mesh.defer(() => service.disconnect());
    await expect(client.request("jobs", "work", {}, {}, { ttlMs: 300 })).rejects.toThrow(
      NuropbTimeoutError,
    );
    await waitFor(() => deadLetters().length === 1, 2000, "the expired dead letter");
    expect(jobs.runs.work).toBe(1);
    expect(failureRecordOf(deadLetters()[0]!.frame.headers)).toMatchObject({
      error: "NuropbTimeoutError",
      attempts: 1,
      redeliveries: 1,
    });
    expect(failureRecordOf(deadLetters()[0]!.frame.headers)!.description).toMatch(/database busy/);
  });

  it("fails at once when the transport's real delay passes the caller's ttl", async () => {
    const t = mesh.transport();
    const real = t.scheduling as TransportScheduling;
    const sent: number[] = [];
    const bucketed = withScheduling(t, {
      ...real,
      sendDelayed: (service, frame, delayMs) => {
        sent.push(delayMs);
        return real.sendDelayed(service, frame, delayMs);
      },
      // Rounds every delay up to 10 s, as a coarse delay bucket would.
      deliveryDelayMs: () => 10_000,
    } as TransportScheduling);
    const service = createService({
      transport: bucketed,
      name: "jobs",
      instance: jobs,
      failurePolicy: { delays: [1_000] },
    });
    await service.connect();
    mesh.defer(() => service.disconnect());
    await expect(client.request("jobs", "work", {}, {}, { ttlMs: 5_000 })).rejects.toThrow(
      /database busy/,
    );
    expect(sent).toEqual([]);
    expect(jobs.runs.work).toBe(1);
  });

  it("publishes a fault event after the final failure, without context or params", async () => {
    const watcher = new Watcher();
    const watch = createService({
      transport: mesh.transport(),
      name: "watcher",
      instance: watcher,
      eventBindings: ["nuropb.fault.#"],
    });
    await watch.connect();
    mesh.defer(() => watch.disconnect());
    await serve({ immediateRetries: 1, faultEvents: true });
    await client.command("jobs", "work", { card: "card-4111" }, { Authorization: "Bearer secret" });
    await waitFor(() => watcher.faults.length === 1, 2000, "the fault event");
    const fault = watcher.faults[0]!;
    expect(fault.topic).toBe("nuropb.fault.jobs.work");
    expect(fault.event).toMatchObject({
      error: "NuropbException",
      description: "database busy",
      service: "jobs",
      method: "work",
      attempts: 2,
      kind: "command",
    });
    expect(fault.event).not.toHaveProperty("params");
    expect(JSON.stringify(fault)).not.toMatch(/secret|card-4111/);
  });

  it("raises no fault event for a failed fault event (a subscriber of its own faults)", async () => {
    jobs.error = () => new Error("watcher down");
    await serve({ faultEvents: true }, ["nuropb.fault.#"]);
    await client.command("jobs", "work", {});
    // The command's fault reaches jobs.handleEvent, which fails: dead-lettered, no second fault.
    await waitFor(() => deadLetters().length === 2, 2000, "two dead letters");
    await new Promise((r) => setTimeout(r, 20));
    expect(jobs.eventRuns).toBe(1);
    expect(deadLetters().map((d) => d.frame.headers[FailureHeader.method])).toEqual([
      "work",
      "handleEvent",
    ]);
  });

  it("puts the params in the fault event only when the policy opts in", async () => {
    const watcher = new Watcher();
    const watch = createService({
      transport: mesh.transport(),
      name: "watcher",
      instance: watcher,
      eventBindings: ["nuropb.fault.jobs.*"],
    });
    await watch.connect();
    mesh.defer(() => watch.disconnect());
    await serve({ faultEvents: true, faultParams: true });
    await client.command("jobs", "work", { order: 7 });
    await waitFor(() => watcher.faults.length === 1, 2000, "the fault event");
    expect(watcher.faults[0]!.event).toMatchObject({ params: { order: 7 } });
  });

  it("lets a method's policy replace the service's, or switch it off", async () => {
    await serve({ immediateRetries: 1 });
    await client.command("jobs", "ownPolicy", {});
    await client.command("jobs", "noPolicy", {});
    await client.command("jobs", "work", {});
    await waitFor(() => deadLetters().length === 3, 2000, "three dead letters");
    expect(jobs.runs).toEqual({ ownPolicy: 4, noPolicy: 1, work: 2 });
    const byMethod = new Map(
      deadLetters().map((d) => [d.frame.headers[FailureHeader.method] ?? "none", d]),
    );
    expect([...byMethod.keys()].sort()).toEqual(["none", "ownPolicy", "work"]);
  });

  it("retries and redelivers a failing event to this service only", async () => {
    const other = new Watcher();
    const bystander = createService({
      transport: mesh.transport(),
      name: "bystander",
      instance: other,
      eventBindings: ["orders.*"],
    });
    await bystander.connect();
    mesh.defer(() => bystander.disconnect());
    jobs.succeedFrom = 4;
    await serve({ immediateRetries: 1, delays: [2] }, ["orders.*"]);
    await client.publishEvent("orders.created", { id: 1 });
    await waitFor(() => jobs.events.length === 1, 2000, "the event handled");
    expect(jobs.eventRuns).toBe(4);
    expect(delays).toEqual([2]);
    expect(frames[0]!.headers[FailureHeader.method]).toBe("handleEvent");
    expect(other.faults).toHaveLength(1);
    expect(deadLetters()).toEqual([]);
  });

  it("dead-letters with the record when the redelivery cannot be scheduled: nothing is lost", async () => {
    const t = mesh.transport();
    const real = t.scheduling as TransportScheduling;
    const broken = withScheduling(t, {
      ...real,
      sendDelayed: () => Promise.reject(new Error("broker refused")),
    });
    const service = createService({
      transport: broken,
      name: "jobs",
      instance: jobs,
      failurePolicy: { delays: [1] },
    });
    await service.connect();
    mesh.defer(() => service.disconnect());
    await client.command("jobs", "work", {});
    await waitFor(() => deadLetters().length === 1, 2000, "the dead letter");
    expect(failureRecordOf(deadLetters()[0]!.frame.headers)).toMatchObject({
      attempts: 1,
      redeliveries: 0,
    });
    expect(mesh.hub.queueDepth("nuropb-jobs-sq")).toBe(0);
  });

  it("falls back to reject on a transport whose deliveries cannot dead-letter with headers", async () => {
    const t = mesh.transport();
    const plain = new Proxy(t, {
      get(target, prop) {
        if (prop === "consumeService") {
          return (spec: ServiceQueueSpec, handler: DeliveryHandler) =>
            target.consumeService(spec, (d) =>
              handler({
                headers: d.headers,
                body: d.body,
                correlationId: d.correlationId,
                redelivered: d.redelivered,
                ...(d.replyTo === undefined ? {} : { replyTo: d.replyTo }),
                ack: () => d.ack(),
                requeue: () => d.requeue(),
                reject: () => d.reject(),
              }),
            );
        }
        const v: unknown = Reflect.get(target, prop, target);
        return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const service = createService({
      transport: plain,
      name: "jobs",
      instance: jobs,
      failurePolicy: { immediateRetries: 1 },
    });
    await service.connect();
    mesh.defer(() => service.disconnect());
    await expect(client.request("jobs", "work", {})).rejects.toThrow(/database busy/);
    await waitFor(() => deadLetters().length === 1, 2000, "the dead letter");
    expect(jobs.runs.work).toBe(2);
    expect(failureRecordOf(deadLetters()[0]!.frame.headers)).toBeUndefined();
  });

  it("refuses a bad policy at once, naming the field", () => {
    const t = mesh.transport();
    const make = (failurePolicy: unknown) => () =>
      createService({
        transport: t,
        name: "jobs",
        instance: new Jobs(),
        failurePolicy: failurePolicy as FailurePolicy,
      });
    expect(make({ delays: [1, -1] })).toThrow(/options\.failurePolicy\.delays\[1\]/);
    expect(make({ immediateRetries: 1.5 })).toThrow(/failurePolicy\.immediateRetries/);
    expect(make({ retryable: true })).toThrow(/failurePolicy\.retryable must be a function/);
    expect(make({ faultEvents: "yes" })).toThrow(/failurePolicy\.faultEvents must be a boolean/);
    expect(make({ retries: 2 })).toThrow(/unknown field 'retries'/);
    expect(make([1])).toThrow(/failurePolicy must be an object/);
    expect(() => publishToMesh({ failurePolicy: { delays: "1s" as never } })).toThrow(
      /publishToMesh\.failurePolicy\.delays must be an array/,
    );
    const bare = withScheduling(t, undefined);
    expect(() =>
      createService({
        transport: bare,
        name: "jobs",
        instance: new Jobs(),
        failurePolicy: { delays: [1_000] },
      }),
    ).toThrow(/options\.failurePolicy\.delays needs a transport with scheduling/);
    expect(() =>
      createService({
        transport: bare,
        name: "jobs",
        instance: { later: () => 1 },
        methods: { later: { failurePolicy: { delays: [5] } } },
      }),
    ).toThrow(/methods\.later\.failurePolicy\.delays needs a transport with scheduling/);
    expect(() =>
      createService({
        transport: t,
        name: "jobs",
        instance: { later: () => 1 },
        methods: { later: { failurePolicy: { delays: [5], immediateRetries: -1 } } },
      }),
    ).toThrow(/createService: methods\.later\.failurePolicy\.immediateRetries/);
    // Immediate retries alone need no scheduling.
    expect(() =>
      createService({
        transport: bare,
        name: "jobs",
        instance: new Jobs(),
        failurePolicy: { immediateRetries: 1 },
      }),
    ).not.toThrow();
  });
});

import { afterEach, expect, it } from "vitest";
import { randomBytes } from "node:crypto";
import { NuropbError, type EventType, type Transport, type WireHeaders } from "@nuropb/protocol";
import { createClient, createService, failureRecordOf } from "@nuropb/core";

/** What the failure-pipeline scenarios need of one broker. */
export interface FailurePipelineTarget {
  /** A fresh, unconnected transport on the test's mesh. */
  createTransport(): Transport;
  /** The headers of the dead letters that came from `service`'s queue so far. */
  deadLetters(service: string): Promise<WireHeaders[]>;
}

class Failing {
  runs = 0;
  succeedFrom = Number.POSITIVE_INFINITY;
  work(): string {
    this.runs++;
    if (this.runs >= this.succeedFrom) return `done after ${String(this.runs)}`;
    throw new NuropbError("database busy", { retryable: true });
  }
}

class Watcher {
  readonly faults: EventType[] = [];
  handleEvent(event: EventType): void {
    this.faults.push(event);
  }
}

async function until<T>(read: () => Promise<T>, ok: (v: T) => boolean, what: string): Promise<T> {
  const start = Date.now();
  for (;;) {
    const v = await read();
    if (ok(v)) return v;
    if (Date.now() - start > 20_000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * The failure pipeline end to end on a broker (its transport's scheduling and dead letters):
 * immediate retries, delayed redelivery, the failure record in the dead letter, fault events, a
 * request answered by a later delivery.
 */
export function describeFailurePipeline(target: FailurePipelineTarget): void {
  const stops: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const stop of stops.splice(0).reverse()) await stop().catch(() => undefined);
  });

  async function start<T extends object>(
    make: (t: Transport) => { connect(): Promise<void>; disconnect(): Promise<void> } & T,
  ): Promise<T> {
    const t = target.createTransport();
    const p = make(t);
    await p.connect();
    stops.push(async () => {
      await p.disconnect();
      await t.close();
    });
    return p;
  }

  it("retries, redelivers with backoff, then dead-letters with the record and a fault event", async () => {
    const name = `fp-${randomBytes(4).toString("hex")}`;
    const failing = new Failing();
    const watcher = new Watcher();
    await start((t) =>
      createService({
        transport: t,
        name: `${name}-watch`,
        instance: watcher,
        eventBindings: [`nuropb.fault.${name}.*`],
      }),
    );
    await start((t) =>
      createService({
        transport: t,
        name,
        instance: failing,
        failurePolicy: { immediateRetries: 1, delays: [100, 200], faultEvents: true },
      }),
    );
    const client = await start((t) => createClient({ transport: t }));
    await client.command(name, "work", { n: 1 }, { Authorization: "Bearer secret" });
    const dead = await until(
      () => target.deadLetters(name),
      (d) => d.length >= 1,
      "the dead letter",
    );
    expect(dead).toHaveLength(1);
    expect(failureRecordOf(dead[0]!)).toMatchObject({
      error: "NuropbException",
      description: "database busy",
      service: name,
      method: "work",
      attempts: 6,
      redeliveries: 2,
    });
    expect(failing.runs).toBe(6);
    await until(
      async () => watcher.faults.length,
      (n) => n === 1,
      "the fault event",
    );
    expect(watcher.faults[0]!.topic).toBe(`nuropb.fault.${name}.work`);
    expect(watcher.faults[0]!.event).toMatchObject({ attempts: 6, kind: "command" });
    expect(JSON.stringify(watcher.faults[0])).not.toMatch(/secret/);
  });

  it("answers a request from a delayed redelivery that succeeds", async () => {
    const name = `fp-${randomBytes(4).toString("hex")}`;
    const failing = new Failing();
    failing.succeedFrom = 2;
    await start((t) =>
      createService({ transport: t, name, instance: failing, failurePolicy: { delays: [100] } }),
    );
    const client = await start((t) => createClient({ transport: t, defaultTtlMs: 15_000 }));
    await expect(client.request(name, "work", {})).resolves.toBe("done after 2");
    expect(await target.deadLetters(name)).toEqual([]);
  });
}

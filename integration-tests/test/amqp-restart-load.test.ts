import { createClient, createService } from "@nuropb/core";
import type { MeshParticipant, MeshService } from "@nuropb/core";
import { isNuropbError } from "@nuropb/protocol";
import type { Transport } from "@nuropb/protocol";
import { createAmqpTransport } from "@nuropb/transport-amqp";
import { delay, waitFor, watchEvents, withTimeout } from "@nuropb/transport-testkit";
import { afterEach, beforeEach, expect, it } from "vitest";
import { createTestMesh, startRabbitApp, stopRabbitApp } from "../src/amqp-helpers.ts";
import type { TestMesh } from "../src/amqp-helpers.ts";

// Requests flow at a fixed concurrency while the broker application is stopped and started
// (rabbitmqctl stop_app / start_app). Every request must end — with its result or a typed NuroPb
// error — and none may hang; new requests succeed again soon after the broker is back.

const CONCURRENCY = 16;
const TTL_MS = 4_000;
/** A request that has not settled this long after its ttl counts as hung. */
const HANG_MS = TTL_MS + 10_000;
const T = 30_000;

class Echo {
  echo(params: { worker: number; n: number }): unknown {
    return params;
  }
}

let mesh: TestMesh;
const transports: Transport[] = [];
let service: MeshService<Echo>;
let client: MeshParticipant;

beforeEach(async () => {
  mesh = await createTestMesh("restart-load");
  const make = (): Transport => {
    const t = createAmqpTransport({
      url: mesh.url,
      reconnect: { initialDelayMs: 100, maxDelayMs: 1_000 },
    });
    transports.push(t);
    return t;
  };
  service = createService({ transport: make(), name: "load", instance: new Echo(), prefetch: 32 });
  client = createClient({ transport: make(), defaultTtlMs: TTL_MS });
  await service.connect();
  await client.connect();
});

afterEach(async () => {
  await client.disconnect().catch(() => undefined);
  await service.disconnect().catch(() => undefined);
  await Promise.allSettled(transports.splice(0).map((t) => t.close()));
  await mesh.teardown();
});

type Outcome =
  | { readonly kind: "ok"; readonly at: number }
  | { readonly kind: "error"; readonly name: string; readonly at: number }
  | { readonly kind: "hung" }
  | { readonly kind: "wrong" };

it("a broker restart under load: every request accounted for, none hangs, service resumes within seconds", async () => {
  const outcomes: Outcome[] = [];
  let phase = 0; // 0 before the restart, 1 during, 2 after the broker is back
  const okIn = [0, 0, 0];
  let running = true;

  const worker = async (w: number): Promise<void> => {
    for (let n = 0; running; n++) {
      const started = phase;
      let outcome: Outcome;
      try {
        const result = await withTimeout(
          client.request("load", "echo", { worker: w, n }, {}, { ttlMs: TTL_MS }),
          HANG_MS,
          `request ${w}/${n}`,
        );
        const r = result as { worker?: number; n?: number };
        outcome = r.worker === w && r.n === n ? { kind: "ok", at: started } : { kind: "wrong" };
        if (outcome.kind === "ok") okIn[started] = (okIn[started] ?? 0) + 1;
      } catch (err) {
        outcome = isNuropbError(err)
          ? { kind: "error", name: err.name, at: started }
          : { kind: "hung" };
      }
      outcomes.push(outcome);
      // Do not spin while the broker is away (requests fail at once then).
      if (outcome.kind !== "ok") await delay(20);
    }
  };

  const workers = Array.from({ length: CONCURRENCY }, (_, w) => worker(w));
  await waitFor(() => (okIn[0] ?? 0) >= 200, T, "200 successful requests before the restart");

  const clientEvents = watchEvents(transports[1] as Transport);
  const serviceEvents = watchEvents(transports[0] as Transport);
  phase = 1;
  await stopRabbitApp();
  try {
    await clientEvents.waitForItem((e) => e.type === "disconnected", T);
    await serviceEvents.waitForItem((e) => e.type === "disconnected", T);
  } finally {
    await startRabbitApp();
  }
  await clientEvents.waitForItem((e) => e.type === "reconnected", T);
  await serviceEvents.waitForItem((e) => e.type === "reconnected", T);
  phase = 2;
  // New requests succeed within seconds of the node being back.
  await waitFor(() => (okIn[2] ?? 0) >= 200, 15_000, "200 successful requests after the restart");
  running = false;
  await withTimeout(Promise.all(workers), HANG_MS + 5_000, "the workers to finish");
  clientEvents.stop();
  serviceEvents.stop();

  const errors = new Map<string, number>();
  for (const o of outcomes)
    if (o.kind === "error") errors.set(o.name, (errors.get(o.name) ?? 0) + 1);
  console.log(
    `restart under load: ${outcomes.length} requests, ok before/during/after = ${okIn.join("/")}, errors ${JSON.stringify(Object.fromEntries(errors))}`,
  );
  expect(outcomes.filter((o) => o.kind === "hung")).toHaveLength(0);
  expect(outcomes.filter((o) => o.kind === "wrong")).toHaveLength(0);
  // Failures are the typed, expected ones: the connection was down, or a call's outcome is unknown.
  for (const name of errors.keys()) {
    expect(["NuropbTransportError", "NuropbTimeoutError", "NuropbConnectionClosedError"]).toContain(
      name,
    );
  }
  expect(errors.size).toBeGreaterThan(0); // the restart was felt
}, 120_000);

import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { buildHeaders, newId, parseWireJson, responseQueueName } from "@nuropb/protocol";
import type { InboundFrame, Transport } from "@nuropb/protocol";
import { configureMesh, createAmqpTransport } from "@nuropb/transport-amqp";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import { provided, useBroker } from "../brokers.ts";
import { runClosedLoop } from "../load.ts";
import type { ClosedLoopResult } from "../load.ts";
import { startNuropbEcho } from "../peers/nuropb-echo.ts";
import { runTag, smallParams, withCleanup } from "../rr.ts";
import { formatInt, median } from "../suite.ts";
import type { BenchSuite, SuiteResult } from "../suite.ts";

// Normal echo requests at a fixed concurrency while a raw sender injects hostile frames into the
// same service: what one bad peer costs everyone else. Every injected frame is a request with a
// reply address, so the service answers each with an error; the injector sends the next one only
// after that answer (one in flight: no backlog spills into the next phase).

/** core's default maxInboundBodyBytes (4 MiB): larger bodies are dead-lettered unread. */
const CORE_MAX_INBOUND_BODY_BYTES = 4 * 1024 * 1024;
/** Size of the hostile bodies meant to be parsed: just under that limit. */
const HOSTILE_BYTES = CORE_MAX_INBOUND_BODY_BYTES - 64 * 1024;
/** Requests in flight of the normal traffic. */
const CONCURRENCY = 16;
/** Length of one phase (normal traffic, with or without injection). */
const PHASE_MS = 4_000;
/** Pause between an injected frame's answer and the next frame. */
const INJECT_GAP_MS = 250;
/** At most this many frames per phase, whatever the timing. */
const MAX_FRAMES_PER_PHASE = 12;
/** An injected frame not answered by then fails the suite (a service that froze for good). */
const ANSWER_TIMEOUT_MS = 20_000;

/** A kind of hostile frame: its name and its body. */
interface FrameKind {
  readonly name: string;
  readonly body: Uint8Array;
}

/** `[unit,unit,…]` of about `bytes` bytes. */
function repeated(unit: string, bytes: number): string {
  const n = Math.max(1, Math.floor((bytes - 2) / (unit.length + 1)));
  return `[${Array<string>(n).fill(unit).join(",")}]`;
}

function frameKinds(): FrameKind[] {
  const half = HOSTILE_BYTES / 2;
  const utf8 = (text: string): Uint8Array => Buffer.from(text, "utf8");
  return [
    { name: "bare NaN tokens", body: utf8(repeated("NaN", HOSTILE_BYTES)) },
    { name: "nested arrays [[[…]]]", body: utf8("[".repeat(half) + "]".repeat(half)) },
    {
      name: "nested arrays + NaN",
      body: utf8(`${"[".repeat(half - 2)}NaN${"]".repeat(half - 2)}`),
    },
    // The longest integers the parser reads (4300 digits, Python's own limit), as bigints.
    { name: "4300-digit integers", body: utf8(repeated("9".repeat(4300), HOSTILE_BYTES)) },
    { name: "one 4 MB digit run", body: utf8(`[${"7".repeat(HOSTILE_BYTES - 2)}]`) },
    {
      name: "8 MB NaN body (> maxInboundBodyBytes)",
      body: utf8(repeated("NaN", 2 * CORE_MAX_INBOUND_BODY_BYTES)),
    },
  ];
}

/** What one phase measured. */
interface PhaseResult {
  readonly transport: string;
  readonly kind: FrameKind | undefined;
  readonly load: ClosedLoopResult;
  /** Longest event-loop delay seen during the phase, in ms. */
  readonly stallMs: number;
  /** Send-to-error-answer times of the injected frames, in ms. */
  readonly answerMs: readonly number[];
}

/** Sends hostile frames to a service and waits for each error answer. */
class Injector {
  readonly #transport: Transport;
  readonly #service: string;
  readonly #address: string;
  readonly #waiting = new Map<string, () => void>();

  private constructor(transport: Transport, service: string, address: string) {
    this.#transport = transport;
    this.#service = service;
    this.#address = address;
  }

  static async start(transport: Transport, service: string): Promise<Injector> {
    await transport.connect();
    const address = responseQueueName(undefined, newId(), transport.mesh);
    const injector = new Injector(transport, service, address);
    await transport.consumeResponses({ address }, (frame: InboundFrame) => {
      injector.#waiting.get(frame.correlationId)?.();
    });
    return injector;
  }

  /** Sends `kind` until `stop` says so or the bound is reached; one frame in flight. */
  async run(kind: FrameKind, stop: () => boolean): Promise<number[]> {
    const answerMs: number[] = [];
    while (!stop() && answerMs.length < MAX_FRAMES_PER_PHASE) {
      const correlationId = newId();
      const answered = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          this.#waiting.delete(correlationId);
          reject(
            new Error(`no answer to a '${kind.name}' frame in ${String(ANSWER_TIMEOUT_MS)} ms`),
          );
        }, ANSWER_TIMEOUT_MS);
        this.#waiting.set(correlationId, () => {
          clearTimeout(timer);
          this.#waiting.delete(correlationId);
          resolve();
        });
      });
      const t0 = performance.now();
      await this.#transport.send(
        { kind: "rpc", service: this.#service },
        {
          headers: buildHeaders("request", null),
          body: kind.body,
          correlationId,
          replyTo: this.#address,
        },
      );
      await answered;
      answerMs.push(performance.now() - t0);
      await sleep(INJECT_GAP_MS);
    }
    return answerMs;
  }
}

/** Runs the phases on one transport: normal traffic alone, then with each kind, then alone. */
async function runPhases(
  transportName: string,
  makeTransport: () => Transport,
): Promise<PhaseResult[]> {
  return withCleanup(async (defer) => {
    const echo = await startNuropbEcho(makeTransport, `echo-${runTag()}`);
    defer(() => echo.close());
    const client = await echo.addClient();
    const injectorTransport = makeTransport();
    defer(() => injectorTransport.close());
    const injector = await Injector.start(injectorTransport, echo.serviceName);
    const params = smallParams();
    const call = (): Promise<unknown> => client.call(params);
    await runClosedLoop(call, { concurrency: CONCURRENCY, durationMs: 1_000 }); // warm-up
    const results: PhaseResult[] = [];
    for (const kind of [undefined, ...frameKinds(), undefined]) {
      const delay = monitorEventLoopDelay({ resolution: 5 });
      let done = false;
      delay.enable();
      const loading = runClosedLoop(call, {
        concurrency: CONCURRENCY,
        durationMs: PHASE_MS,
        onError: "count",
      }).finally(() => {
        done = true; // the injector stops with the normal traffic
      });
      const injecting = kind === undefined ? Promise.resolve([]) : injector.run(kind, () => done);
      const [load, answerMs] = await Promise.all([loading, injecting]);
      delay.disable();
      results.push({ transport: transportName, kind, load, stallMs: delay.max / 1e6, answerMs });
      process.stderr.write(`  ${transportName}: ${kind?.name ?? "no injection"} done\n`);
      await sleep(200);
    }
    return results;
  });
}

function row(r: PhaseResult): string[] {
  const us = (v: number): string => (Number.isFinite(v) ? formatInt(v) : "—");
  return [
    r.transport,
    r.kind?.name ?? "none",
    r.kind === undefined ? "—" : `${(r.kind.body.byteLength / 1_048_576).toFixed(1)} MiB`,
    String(r.answerMs.length),
    r.answerMs.length === 0
      ? "—"
      : `${formatInt(median(r.answerMs))} / ${formatInt(Math.max(...r.answerMs))}`,
    formatInt(r.load.reqPerSec),
    us(r.load.p50Us),
    us(r.load.p99Us),
    us(r.load.maxUs),
    String(r.load.errors),
    formatInt(r.stallMs),
  ];
}

/** Hostile frames beside normal traffic, on the memory transport and RabbitMQ. */
export const pathologicalSuite: BenchSuite = {
  name: "pathological",
  description:
    "normal echo requests (c=16) while a raw sender injects hostile frames (NaN tokens, deep nesting, long integers, oversize) into the same service",
  async run(): Promise<SuiteResult> {
    // The parse alone, once per kind, before any load: what the service pays per frame at best.
    const parseAlone = frameKinds().map((kind) => {
      const text = Buffer.from(kind.body).toString("utf8");
      const t0 = performance.now();
      let outcome = "read";
      try {
        parseWireJson(text);
      } catch {
        outcome = "refused";
      }
      return `${kind.name} ${(performance.now() - t0).toFixed(0)} ms (${outcome})`;
    });
    const results: PhaseResult[] = [];
    const hub = createMemoryHub({ maxDeadLetters: 8 });
    const mesh = `bench-${runTag()}`;
    results.push(...(await runPhases("memory", () => createMemoryTransport({ hub, mesh }))));
    const notes: string[] = [];
    try {
      const base = provided(await useBroker("rabbitmq"), "amqpUrl");
      const url = `${base}/bench-patho-${runTag()}`;
      await configureMesh({ url });
      results.push(...(await runPhases("amqp", () => createAmqpTransport({ url }))));
    } catch (err) {
      notes.push(`!! RabbitMQ phases not run: ${String(err)}`);
    }
    const summary = (transport: string): string => {
      const mine = results.filter((r) => r.transport === transport);
      const base = mine.filter((r) => r.kind === undefined);
      const worst = mine.reduce((a, b) => (b.stallMs > a.stallMs ? b : a));
      const p99 = (r: PhaseResult | undefined): string => formatInt(r?.load.p99Us ?? NaN);
      return `${transport}: p99 ${base.map(p99).join(" / ")} µs without injection; longest event-loop stall ${formatInt(worst.stallMs)} ms (${worst.kind?.name ?? "none"}), p99 ${p99(worst)} µs then`;
    };
    const transports = [...new Set(results.map((r) => r.transport))];
    return {
      columns: [
        "transport",
        "injected",
        "body",
        "frames",
        "answer ms p50/max",
        "req/s",
        "p50 µs",
        "p99 µs",
        "max µs",
        "errors",
        "stall ms",
      ],
      rows: results.map(row),
      notes: [
        `phases of ${String(PHASE_MS / 1000)} s of echo requests (${String(CONCURRENCY)} in flight); each hostile frame is a request answered with an error, the next sent ${String(INJECT_GAP_MS)} ms after that answer (at most ${String(MAX_FRAMES_PER_PHASE)} per phase)`,
        "stall ms: longest event-loop delay in the phase (monitorEventLoopDelay); service, client and injector share this process's loop",
        `parseWireJson alone, once each, before the phases: ${parseAlone.join("; ")}`,
        `bodies just under core's maxInboundBodyBytes (${String(CORE_MAX_INBOUND_BODY_BYTES)} B) are parsed; the 8 MB one is dead-lettered unread`,
        ...notes,
      ],
      comparison: transports.map(summary).join("\n"),
    };
  },
};

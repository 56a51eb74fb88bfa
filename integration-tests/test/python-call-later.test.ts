import { createService, type AnswerContext, type MeshService } from "@nuropb/core";
import {
  isNuropbError,
  noopLogger,
  type LogFields,
  type Logger,
  type NuropbError,
  type Transport,
} from "@nuropb/protocol";
import { createAmqpTransport } from "@nuropb/transport-amqp";
import { createCollector, waitFor, type Collector } from "@nuropb/transport-testkit";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createTestMesh, type TestMesh } from "../src/amqp-helpers.ts";
import { pythonPeerScript, startPythonPeer, type PythonPeer } from "../src/python-peer.ts";

// Asynchronous calls (issue #21) answered by a LIVE, unmodified Python NuroPb 0.1.8 service: it
// answers to whatever reply_to says (here the TypeScript service's own queue) and echoes the
// context, record included, so the answer handlers of any TypeScript instance take it.

const T = 15_000;
const PY = "py_interop";

interface Answer {
  readonly instance: string;
  readonly kind: "result" | "error";
  readonly value: unknown;
  readonly ctx: AnswerContext;
}

class Orders {
  readonly name: string;
  readonly answers: Collector<Answer>;
  constructor(name: string, answers: Collector<Answer>) {
    this.name = name;
    this.answers = answers;
  }
  echoed(value: unknown, ctx: AnswerContext): void {
    this.answers.push({ instance: this.name, kind: "result", value, ctx });
  }
  failed(error: NuropbError, ctx: AnswerContext): void {
    this.answers.push({ instance: this.name, kind: "error", value: error, ctx });
  }
}

let mesh: TestMesh;
let peer: PythonPeer | undefined;
let transports: Transport[] = [];
let services: MeshService<Orders>[] = [];

const startPeer = (): Promise<PythonPeer> =>
  startPythonPeer({
    script: pythonPeerScript("nuropb_peer.py"),
    config: { amqp_url: mesh.url, services: [{ name: PY, kind: "interop" }] },
  });

/** A logger keeping the warnings' fields (the reasons of dead-lettered answers). */
function warnings(into: LogFields[]): Logger {
  return {
    ...noopLogger,
    warn: (_msg, fields) => into.push(fields ?? {}),
    child: () => warnings(into),
  };
}

async function orders(
  name: string,
  answers: Collector<Answer>,
  logger: Logger = noopLogger,
): Promise<MeshService<Orders>> {
  const transport = createAmqpTransport({ url: mesh.url });
  transports.push(transport);
  const svc = createService({
    name: "ts_orders",
    instance: new Orders(name, answers),
    transport,
    logger,
    answerHandlers: [
      { service: PY, method: "echo", onResult: "echoed", onError: "failed" },
      { service: PY, method: "fail_sync", onResult: "echoed", onError: "failed" },
    ],
  });
  await svc.connect();
  services.push(svc);
  return svc;
}

beforeAll(async () => {
  mesh = await createTestMesh("pylive-call-later");
  peer = await startPeer();
});

afterEach(async () => {
  await Promise.allSettled(services.map((s) => s.disconnect()));
  await Promise.allSettled(transports.map((t) => t.close()));
  services = [];
  transports = [];
});

afterAll(async () => {
  await peer?.stop();
  await mesh?.teardown();
});

describe("callLater answered by a live Python NuroPb service", () => {
  it("hands the result to the answer handler with its state and context, no credentials", async () => {
    const answers = createCollector<Answer>("answers");
    const svc = await orders("a", answers);
    const value = { order: "A-1", lines: [{ sku: "x", qty: 2 }] };
    const callId = await svc.callLater(
      PY,
      "echo",
      { value },
      {
        state: { orderId: "A-1" },
        context: { Authorization: "Bearer token", tenant: "acme" },
        traceId: "py-trace-1",
      },
    );
    const [answer] = await answers.waitForCount(1, T);
    expect(answer).toMatchObject({
      kind: "result",
      value,
      ctx: {
        callId,
        service: PY,
        method: "echo",
        state: { orderId: "A-1" },
        traceId: "py-trace-1",
        context: { tenant: "acme" },
      },
    });
    expect(answer?.ctx.context).not.toHaveProperty("Authorization");
  });

  it("hands a Python exception to the error handler, once", async () => {
    const answers = createCollector<Answer>("answers");
    const warned: LogFields[] = [];
    const svc = await orders("a", answers, warnings(warned));
    const callId = await svc.callLater(PY, "fail_sync", { message: "card declined" }, { state: 1 });
    const [answer] = await answers.waitForCount(1, T);
    expect(answer?.kind).toBe("error");
    expect(isNuropbError(answer?.value)).toBe(true);
    expect((answer?.value as NuropbError).description).toContain("card declined");
    expect(answer?.ctx.state).toBe(1);
    // Python then sends a second response whose result is the error's text (PROTOCOL.md §7.3):
    // it loses the call's claim and is dead-lettered, never handed to the result handler.
    await waitFor(
      () =>
        warned.some((f) => f.correlationId === callId && /duplicate answer/.test(String(f.reason))),
      T,
      "Python's duplicate response to be dead-lettered",
    );
    expect(answers.items).toHaveLength(1);
  });

  it("another TypeScript instance takes the answer when the caller has gone", async () => {
    // The Python service is down while the call waits in its queue; the calling instance goes
    // too, and a new one is there when Python comes back and answers.
    await peer?.stop();
    peer = undefined;
    const answers = createCollector<Answer>("answers");
    const a = await orders("a", answers);
    const callId = await a.callLater(PY, "echo", { value: "later" }, { state: { step: 2 } });
    await a.disconnect();
    await orders("b", answers);
    peer = await startPeer();
    const [answer] = await answers.waitForCount(1, T);
    expect(answer).toMatchObject({
      instance: "b",
      kind: "result",
      value: "later",
      ctx: { callId, state: { step: 2 } },
    });
  });
});

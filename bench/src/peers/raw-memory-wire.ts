import { Header, NUROPB_PROTOCOL_VERSION, NUROPB_VERSION, newId } from "@nuropb/protocol";

/** A hand-written in-process echo carrying nuropb's wire, and nothing else. */
export interface RawMemoryEcho {
  call(params: unknown): Promise<unknown>;
  close(): void;
}

/** What the Transport contract carries per message: headers, body, correlation id, expiry. */
interface Message {
  readonly headers: Readonly<Record<string, string | null>>;
  readonly body: Uint8Array;
  readonly correlationId: string;
  /** Requests: when the message expires (ms since the epoch); the queue drops it after. */
  readonly expiresAt: number;
}

interface Pending {
  readonly resolve: (value: unknown) => void;
  readonly reject: (err: Error) => void;
  readonly expiresAt: number;
}

/**
 * A queued request as the service sees it: settled once (ack, requeue or reject), with the
 * redelivered flag, as the transport rules ask.
 */
class Delivery {
  settled = false;
  readonly message: Message;
  readonly redelivered: boolean;
  readonly #onSettle: (d: Delivery, how: "ack" | "requeue" | "reject") => void;
  constructor(
    message: Message,
    redelivered: boolean,
    onSettle: (d: Delivery, how: "ack" | "requeue" | "reject") => void,
  ) {
    this.message = message;
    this.redelivered = redelivered;
    this.#onSettle = onSettle;
  }
  ack(): void {
    this.#settle("ack");
  }
  requeue(): void {
    this.#settle("requeue");
  }
  reject(): void {
    this.#settle("reject");
  }
  #settle(how: "ack" | "requeue" | "reject"): void {
    if (this.settled) return;
    this.settled = true;
    this.#onSettle(this, how);
  }
}

/** What a handler gets besides its params (the issue's `ctx`, without the mesh calls). */
class Call {
  readonly context: Record<string, unknown>;
  readonly traceId: string | null;
  readonly correlationId: string;
  readonly userClaims: unknown = undefined;
  /** Events added by the handler, published only if it succeeds. */
  events: { topic: string; event: unknown }[] | undefined;
  constructor(context: Record<string, unknown>, traceId: string | null, correlationId: string) {
    this.context = context;
    this.traceId = traceId;
    this.correlationId = correlationId;
  }
  addEvent(event: { topic: string; event: unknown }): void {
    (this.events ??= []).push(event);
  }
}

const TTL_MS = 10_000;
/** The service takes at most this many unacknowledged requests (nuropb's default prefetch). */
const PREFETCH = 64;

function utf8Text(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8");
}

/**
 * The least work any request/response pair in one process must do to carry nuropb's wire under
 * the rules the memory transport issue sets for every message: the Python NuroPb request and
 * response envelopes as UTF-8 JSON bytes with the contract's headers, a correlation id and a ttl
 * on every request (stamped on the message and checked when it is delivered), a service that
 * takes at most `PREFETCH` unacknowledged requests and acknowledges each. The client parks a
 * promise in a map; one microtask per batch moves the queues; the service parses the envelope and
 * answers with its params; the client parses the answer and settles the promise. Client expiry is
 * one shared 100 ms sweep, not a timer per request; no trace id is made up (it stays null).
 * The service side keeps the smallest form of the per-call rules the issue names: a method table
 * (unknown → error response), a `ctx` per call with `addEvent`, a handler that may return a value
 * or a promise, errors answered as error responses, and a settle-once delivery (ack, requeue or
 * reject, with its redelivered flag). Everything else nuropb does (schema validation, authorise
 * hooks, call-again, dead-letter routing, per-instance queues, describe, drain on disconnect) is
 * left out: it is the ceiling for an in-process echo of this wire, not a rival.
 */
export function startRawMemoryEcho(): RawMemoryEcho {
  const pending = new Map<string, Pending>();
  let requests: Message[] = [];
  let responses: Message[] = [];
  let unacked = 0;
  let dropped = 0;
  let scheduled = false;

  // The service: a method table, and the echo as its one method (value or promise allowed).
  const methods = new Map<string, (params: unknown, ctx: Call) => unknown>([
    ["echo", (params) => params],
  ]);
  const onSettle = (d: Delivery, how: "ack" | "requeue" | "reject"): void => {
    unacked--;
    if (how === "requeue") requests.push(d.message);
    else if (how === "reject") dropped++;
  };

  interface Request {
    readonly method: string;
    readonly params: unknown;
    readonly context: Record<string, unknown>;
    readonly correlation_id: string;
    readonly trace_id: string | null;
  }
  type ErrorBody = { error: string; description: string } | null;

  const finish = (d: Delivery, request: Request, ctx: Call, result: unknown, error: ErrorBody) => {
    const response = {
      tag: "response",
      result,
      error,
      correlation_id: request.correlation_id,
      trace_id: request.trace_id,
      context: {},
      warning: null,
      reply_to: "",
    };
    responses.push({
      headers: {
        nuropb_protocol: d.message.headers["nuropb_protocol"] ?? null,
        nuropb_version: d.message.headers["nuropb_version"] ?? null,
        nuropb_type: "response",
        trace_id: request.trace_id,
        encrypted: "",
      },
      body: Buffer.from(JSON.stringify(response), "utf8"),
      correlationId: d.message.correlationId,
      expiresAt: Infinity,
    });
    if (error === null) d.ack();
    else d.reject();
    if (ctx.events !== undefined && error === null) dropped += ctx.events.length; // no subscribers
    schedule();
  };
  const failure = (err: unknown): ErrorBody => ({
    error: "NuropbHandlingError",
    description: String(err),
  });

  const answer = (d: Delivery): void => {
    const request = JSON.parse(utf8Text(d.message.body)) as Request;
    const ctx = new Call(request.context, request.trace_id, d.message.correlationId);
    try {
      const handler = methods.get(request.method);
      if (handler === undefined) throw new Error(`Unknown method ${request.method}`);
      const result = handler(request.params, ctx);
      if (typeof (result as { then?: unknown } | null)?.then === "function") {
        (result as Promise<unknown>).then(
          (r) => finish(d, request, ctx, r, null),
          (err: unknown) => finish(d, request, ctx, null, failure(err)),
        );
      } else finish(d, request, ctx, result, null);
    } catch (err) {
      finish(d, request, ctx, null, failure(err));
    }
  };

  const flush = (): void => {
    scheduled = false;
    while (requests.length > 0 || responses.length > 0) {
      const now = Date.now();
      const inbound = requests;
      requests = [];
      let i = 0;
      for (; i < inbound.length && unacked < PREFETCH; i++) {
        const m = inbound[i] as Message;
        if (m.expiresAt <= now) {
          dropped++;
          continue;
        }
        if (m.headers[Header.type] !== "request") continue;
        unacked++;
        answer(new Delivery(m, false, onSettle));
      }
      if (i < inbound.length) requests = inbound.slice(i).concat(requests);
      const answers = responses;
      responses = [];
      for (const m of answers) {
        if (m.headers[Header.type] !== "response") continue;
        const response = JSON.parse(utf8Text(m.body)) as { result: unknown };
        const p = pending.get(m.correlationId);
        if (p === undefined) continue;
        pending.delete(m.correlationId);
        p.resolve(response.result);
      }
    }
  };

  function schedule(): void {
    if (!scheduled) {
      scheduled = true;
      queueMicrotask(flush);
    }
  }

  const sweep = setInterval(() => {
    const now = Date.now();
    for (const [id, p] of pending) {
      if (p.expiresAt <= now) {
        pending.delete(id);
        p.reject(new Error(`request ${id} timed out (${String(dropped)} expired in the queue)`));
      }
    }
  }, 100);
  sweep.unref();

  return {
    call(params) {
      const correlationId = newId();
      const envelope = {
        tag: "request",
        service: "echo",
        method: "echo",
        params,
        correlation_id: correlationId,
        context: {},
        trace_id: null,
      };
      const body = Buffer.from(JSON.stringify(envelope), "utf8");
      const expiresAt = Date.now() + TTL_MS;
      return new Promise((resolve, reject) => {
        pending.set(correlationId, { resolve, reject, expiresAt });
        requests.push({
          headers: {
            nuropb_protocol: NUROPB_PROTOCOL_VERSION,
            nuropb_version: NUROPB_VERSION,
            nuropb_type: "request",
            trace_id: null,
            encrypted: "",
          },
          body,
          correlationId,
          expiresAt,
        });
        schedule();
      });
    },
    close() {
      clearInterval(sweep);
      for (const p of pending.values()) p.reject(new Error("closed"));
      pending.clear();
    },
  };
}

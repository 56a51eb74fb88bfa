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
 * None of nuropb's other duties (validation, dispatch rules, context, redelivery, dead-lettering,
 * per-instance queues) is done: it is the ceiling for an in-process echo of this wire, not a rival.
 */
export function startRawMemoryEcho(): RawMemoryEcho {
  const pending = new Map<string, Pending>();
  let requests: Message[] = [];
  let responses: Message[] = [];
  let unacked = 0;
  let dropped = 0;
  let scheduled = false;

  const answer = (m: Message): void => {
    const request = JSON.parse(utf8Text(m.body)) as {
      params: unknown;
      correlation_id: string;
      trace_id: string | null;
    };
    const response = {
      tag: "response",
      result: request.params,
      error: null,
      correlation_id: request.correlation_id,
      trace_id: request.trace_id,
      context: {},
      warning: null,
      reply_to: "",
    };
    responses.push({
      headers: {
        [Header.protocol]: m.headers[Header.protocol] ?? null,
        [Header.version]: m.headers[Header.version] ?? null,
        [Header.type]: "response",
        [Header.traceId]: request.trace_id,
        [Header.encrypted]: "",
      },
      body: Buffer.from(JSON.stringify(response), "utf8"),
      correlationId: m.correlationId,
      expiresAt: Infinity,
    });
    unacked--; // the ack
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
        answer(m);
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
            [Header.protocol]: NUROPB_PROTOCOL_VERSION,
            [Header.version]: NUROPB_VERSION,
            [Header.type]: "request",
            [Header.traceId]: null,
            [Header.encrypted]: "",
          },
          body,
          correlationId,
          expiresAt,
        });
        if (!scheduled) {
          scheduled = true;
          queueMicrotask(flush);
        }
      });
    },
    close() {
      clearInterval(sweep);
      for (const p of pending.values()) p.reject(new Error("closed"));
      pending.clear();
    },
  };
}

import { Buffer } from "node:buffer";
import type { WebSocket } from "ws";
import { CloseCode } from "@nuropb/gateway-client";
import type { MessageId } from "@nuropb/gateway-client";
import {
  NuropbConnectionClosedError,
  NuropbMessageError,
  NuropbValidationError,
  isNuropbError,
  parseWireJson,
  toWireJson,
} from "@nuropb/protocol";
import type { Logger } from "@nuropb/protocol";
import { errorJson, httpStatusOf, withStatus } from "./error-status.ts";
import type { EventFanout, EventReceiver } from "./event-fanout.ts";
import type { Caller, GatewayOperations } from "./operations.ts";
import type { ResolvedOptions } from "./options.ts";
import type { SealedRelay } from "./sealed-relay.ts";

/** Why the gateway ended a connection, for its counters. */
export type ConnectionEnd = "closed" | "slow-consumer" | "heartbeat" | "shutdown";

/** What a connection needs from the gateway. */
export interface ConnectionDeps {
  readonly ops: GatewayOperations;
  readonly fanout: EventFanout;
  readonly relay: SealedRelay;
  readonly options: ResolvedOptions;
  readonly logger: Logger;
  /** Called once when the gateway decides to end the connection (before the socket is gone). */
  readonly onEnding: (end: ConnectionEnd) => void;
  /** Called once when the connection is gone. */
  readonly onEnd: (connection: GatewayConnection) => void;
}

type Incoming = Record<string, unknown>;

/** Why a call of a connection that went away stopped waiting (never sent: nobody to send it to). */
const GONE = new NuropbConnectionClosedError("the websocket closed");

function isId(v: unknown): v is MessageId {
  return (
    (typeof v === "string" && v.length > 0 && v.length <= 128) ||
    (typeof v === "number" && Number.isSafeInteger(v))
  );
}

function str(m: Incoming, key: string): string {
  const v = m[key];
  if (typeof v !== "string" || v === "") {
    throw new NuropbValidationError(`'${key}' must be a non-empty string`);
  }
  return v;
}

function optional<T>(
  m: Incoming,
  key: string,
  check: (v: unknown) => v is T,
  what: string,
): T | undefined {
  const v = m[key];
  if (v === undefined || v === null) return undefined;
  if (!check(v)) throw new NuropbValidationError(`'${key}' must be ${what}`);
  return v;
}
const isNumber = (v: unknown): v is number => typeof v === "number";
const isString = (v: unknown): v is string => typeof v === "string";

/**
 * One WebSocket client of the gateway: reads its messages, runs them through the gateway's
 * operations, and writes answers and events with a bounded send buffer.
 *
 * The buffer: before each message is queued, the bytes the socket holds and has not yet handed
 * to the network (`bufferedAmount`) plus the message must stay within `maxBufferedBytes`, or the
 * connection is closed with {@link CloseCode.slowConsumer} (a message is always let through onto
 * an empty buffer, so one large result does not end a healthy connection). So what one client
 * makes the gateway hold is at most `maxBufferedBytes` plus one message, however slowly it reads.
 */
export class GatewayConnection implements EventReceiver {
  readonly #socket: WebSocket;
  readonly #deps: ConnectionDeps;
  readonly #remoteAddress: string;
  #token: string | undefined;
  #alive = true;
  #ending: ConnectionEnd | undefined;
  #ended = false;
  #closeTimer: NodeJS.Timeout | undefined;
  readonly #inFlight = new Map<string, AbortController>();
  /** Largest `bufferedAmount` seen after queueing a message (for tests and the bench). */
  peakBufferedBytes = 0;

  constructor(
    socket: WebSocket,
    token: string | undefined,
    remoteAddress: string,
    deps: ConnectionDeps,
  ) {
    this.#socket = socket;
    this.#deps = deps;
    this.#token = token;
    this.#remoteAddress = remoteAddress;
    socket.on("message", (data, isBinary) => {
      this.#alive = true;
      if (isBinary) {
        this.#sendError(
          null,
          withStatus(new NuropbMessageError("messages must be JSON text"), 400),
        );
        return;
      }
      this.#onText(
        Buffer.isBuffer(data)
          ? data.toString("utf8")
          : Buffer.concat(data as Buffer[]).toString("utf8"),
      );
    });
    socket.on("pong", () => {
      this.#alive = true;
    });
    socket.on("close", () => this.#end());
    socket.on("error", (err) => {
      deps.logger.debug("websocket error", { error: err.message });
    });
  }

  /** Calls in flight on this connection. */
  get inFlight(): number {
    return this.#inFlight.size;
  }

  /**
   * One heartbeat tick: drops the connection when it has not answered the previous ping nor
   * sent anything since, else pings it.
   */
  heartbeat(): void {
    if (this.#ended || this.#ending !== undefined) return;
    if (!this.#alive) {
      this.#ending = "heartbeat";
      this.#deps.onEnding("heartbeat");
      this.#deps.logger.info("websocket dropped: no answer to the heartbeat", {
        remoteAddress: this.#remoteAddress,
      });
      this.#socket.terminate();
      return;
    }
    this.#alive = false;
    this.#socket.ping();
  }

  /** Closes the connection (the gateway is shutting down). */
  shutdown(): void {
    this.#close("shutdown", CloseCode.goingAway, "the gateway is shutting down");
  }

  deliverEvent(text: string): void {
    this.#sendText(text);
  }

  #close(end: ConnectionEnd, code: number, reason: string): void {
    if (this.#ending !== undefined || this.#ended) return;
    this.#ending = end;
    this.#deps.onEnding(end);
    // Nothing more is queued; the subscriptions stop at once.
    this.#deps.fanout.removeAll(this);
    for (const c of this.#inFlight.values()) c.abort(GONE);
    this.#socket.close(code, reason);
    // A reader that does not take the queued bytes and the close frame is dropped.
    this.#closeTimer = setTimeout(
      () => this.#socket.terminate(),
      this.#deps.options.ws.closeTimeoutMs,
    );
    this.#closeTimer.unref();
  }

  #end(): void {
    if (this.#ended) return;
    this.#ended = true;
    clearTimeout(this.#closeTimer);
    this.#deps.fanout.removeAll(this);
    for (const c of this.#inFlight.values()) c.abort(GONE);
    this.#inFlight.clear();
    this.#deps.onEnd(this);
  }

  #sendText(text: string): void {
    if (this.#ending !== undefined || this.#ended || this.#socket.readyState !== 1) return;
    const buffered = this.#socket.bufferedAmount;
    const limit = this.#deps.options.ws.maxBufferedBytes;
    if (buffered > 0 && buffered + Buffer.byteLength(text) > limit) {
      this.#deps.logger.info("websocket closed: slow consumer", {
        remoteAddress: this.#remoteAddress,
        bufferedBytes: buffered,
      });
      this.#close(
        "slow-consumer",
        CloseCode.slowConsumer,
        `send buffer over ${String(limit)} bytes: the client reads too slowly`,
      );
      return;
    }
    this.#socket.send(text);
    const now = this.#socket.bufferedAmount;
    if (now > this.peakBufferedBytes) this.peakBufferedBytes = now;
  }

  #send(message: Record<string, unknown>): void {
    let text: string;
    try {
      text = toWireJson(message);
    } catch (err) {
      const id = message.id as MessageId | null | undefined;
      this.#sendError(
        id ?? null,
        new NuropbMessageError(`the answer cannot be written as JSON: ${(err as Error).message}`),
      );
      return;
    }
    this.#sendText(text);
  }

  #sendError(id: MessageId | null, err: unknown): void {
    if (!isNuropbError(err)) {
      this.#deps.logger.error("websocket call failed", {
        error: err instanceof Error ? err.message : String(err),
      });
    }
    // The error's details may hold a service's bigints: written by hand around errorJson, which
    // never throws (`id` is a string or a safe integer, `status` a number).
    this.#sendText(
      `{"id":${JSON.stringify(id)},"type":"error","error":${errorJson(err)},"status":${String(httpStatusOf(err))}}`,
    );
  }

  #caller(): Caller {
    return { token: this.#token, via: "websocket", remoteAddress: this.#remoteAddress };
  }

  #onText(text: string): void {
    let message: unknown;
    try {
      message = parseWireJson(text);
    } catch (err) {
      this.#sendError(
        null,
        withStatus(new NuropbMessageError(`not JSON: ${(err as Error).message}`), 400),
      );
      return;
    }
    if (typeof message !== "object" || message === null || Array.isArray(message)) {
      this.#sendError(null, new NuropbValidationError("a message must be a JSON object"));
      return;
    }
    const m = message as Incoming;
    if (m.type === "ping") {
      this.#sendText('{"type":"pong"}');
      return;
    }
    if (!isId(m.id)) {
      this.#sendError(
        null,
        new NuropbValidationError("a message needs an 'id': a string (1-128) or a safe integer"),
      );
      return;
    }
    const id = m.id;
    void this.#dispatch(id, m).catch((err: unknown) => this.#sendError(id, err));
  }

  async #dispatch(id: MessageId, m: Incoming): Promise<void> {
    const { ops, fanout, options } = this.#deps;
    switch (m.type) {
      case "request":
      case "sealed-request":
        return this.#tracked(id, async (signal) => {
          if (m.type === "request") {
            const { result, traceId } = await ops.request(
              {
                service: str(m, "service"),
                method: str(m, "method"),
                params: m.params,
                ttlMs: optional(m, "ttlMs", isNumber, "a number of ms"),
                traceId: optional(m, "traceId", isString, "a string"),
              },
              this.#caller(),
              signal,
            );
            this.#send({ id, type: "result", result: result ?? null, traceId });
          } else {
            const service = str(m, "service");
            await ops.checkSealed("request", service, this.#caller());
            const answer = await this.#deps.relay.request(
              {
                service,
                correlationId: str(m, "correlationId"),
                body: str(m, "body"),
                ttlMs: ops.ttl(optional(m, "ttlMs", isNumber, "a number of ms")),
                traceId: optional(m, "traceId", isString, "a string"),
              },
              signal,
            );
            this.#send({
              id,
              type: "sealed-response",
              encrypted: answer.encrypted,
              body: answer.body,
            });
          }
        });
      case "command": {
        const { traceId } = await ops.command(
          {
            service: str(m, "service"),
            method: str(m, "method"),
            params: m.params,
            ttlMs: optional(m, "ttlMs", isNumber, "a number of ms"),
            traceId: optional(m, "traceId", isString, "a string"),
          },
          this.#caller(),
        );
        this.#send({ id, type: "ok", traceId });
        return;
      }
      case "sealed-command": {
        const service = str(m, "service");
        await ops.checkSealed("command", service, this.#caller());
        await this.#deps.relay.command({
          service,
          correlationId: str(m, "correlationId"),
          body: str(m, "body"),
          ttlMs: ops.ttl(optional(m, "ttlMs", isNumber, "a number of ms")),
          traceId: optional(m, "traceId", isString, "a string"),
        });
        this.#send({ id, type: "ok" });
        return;
      }
      case "publish": {
        const { traceId } = await ops.publish(
          m.topic,
          m.event,
          optional(m, "traceId", isString, "a string"),
          this.#caller(),
        );
        this.#send({ id, type: "ok", traceId });
        return;
      }
      case "subscribe": {
        const pattern = await ops.checkSubscribe(m.pattern, this.#caller());
        if (!fanout.has(this, id) && fanout.countOf(this) >= options.ws.maxSubscriptions) {
          throw withStatus(
            new NuropbValidationError(
              `at most ${String(options.ws.maxSubscriptions)} subscriptions per connection`,
            ),
            429,
          );
        }
        if (this.#ending !== undefined || this.#ended) return;
        fanout.add(this, id, pattern);
        this.#send({ id, type: "ok" });
        return;
      }
      case "unsubscribe": {
        const sub = m.subscription;
        if (!isId(sub)) throw new NuropbValidationError("'subscription' must be a subscription id");
        fanout.remove(this, sub);
        this.#send({ id, type: "ok" });
        return;
      }
      case "describe": {
        const view = await ops.describe(str(m, "service"), this.#caller());
        this.#send({
          id,
          type: "result",
          result: {
            ...view.description,
            gateway: {
              requests: view.requests,
              commands: view.commands,
              sealed: view.sealed,
              context_token_key: view.contextTokenKey,
            },
          },
        });
        return;
      }
      case "stats": {
        const view = await ops.stats(str(m, "service"), this.#caller());
        this.#send({ id, type: "result", result: view });
        return;
      }
      case "services":
        this.#send({ id, type: "result", result: { services: ops.serviceNames() } });
        return;
      case "authenticate": {
        const token = m.token;
        if (token !== null && (typeof token !== "string" || token === "")) {
          throw new NuropbValidationError("'token' must be a non-empty string or null");
        }
        this.#token = token ?? undefined;
        this.#send({ id, type: "ok" });
        return;
      }
      default:
        throw new NuropbValidationError(
          `unknown message type ${m.type === undefined ? "undefined" : toWireJson(m.type)}`,
        );
    }
  }

  /** Runs a call counted against `maxInFlight`, abortable when the connection ends. */
  async #tracked(id: MessageId, run: (signal: AbortSignal) => Promise<void>): Promise<void> {
    const key = JSON.stringify(id);
    const max = this.#deps.options.ws.maxInFlight;
    if (this.#inFlight.has(key)) {
      throw new NuropbValidationError(`a call with id ${key} is already in flight`);
    }
    if (this.#inFlight.size >= max) {
      throw withStatus(
        new NuropbValidationError(`at most ${String(max)} calls in flight per connection`),
        429,
      );
    }
    const abort = new AbortController();
    this.#inFlight.set(key, abort);
    try {
      await run(abort.signal);
    } finally {
      if (this.#inFlight.get(key) === abort) this.#inFlight.delete(key);
    }
  }
}

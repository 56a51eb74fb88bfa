import {
  createInbox,
  ErrorCode,
  nuid,
  type Msg,
  type MsgHdrs,
  type NatsConnection,
  type PublishOptions,
} from "nats";
import {
  assertFrameTtl,
  LifecycleState,
  MessageType,
  NuropbMessageError,
  NuropbNotDeliveredError,
  type Destination,
  type Frame,
  type Logger,
  type TransportLifecycle,
} from "@nuropb/protocol";
import { encodeCompactFrame, expandCompactFrame } from "./compact-frame.ts";
import { encodeFrameHeaders } from "./frame-headers.ts";
import type { NatsLink } from "./link.ts";
import {
  eventSubject,
  isLiteralSubject,
  nameOfRequestSubject,
  replySubject,
  requestSubject,
  rpcSubject,
} from "./names.ts";
import { natsCode, natsError, translateNatsError } from "./nats-errors.ts";

/** What a {@link Publisher} needs from its transport. */
export interface PublisherDeps {
  readonly mesh: string;
  readonly link: NatsLink;
  readonly life: TransportLifecycle;
  readonly logger: Logger;
  /** Longest a publish waits for the link and the stream's acknowledgement, in milliseconds. */
  readonly publishTimeoutMs: number;
  /** Requests on core NATS (`"core"`) or into the service's stream. */
  readonly requests: "core" | "jetstream";
  /** Core requests and replies in the compact framing (`"compact"`) or with NATS headers. */
  readonly coreFraming: "compact" | "headers";
}

/** A core publish held to the end of the event loop's turn. */
interface Corked {
  readonly nc: NatsConnection;
  readonly subject: string;
  readonly body: Uint8Array;
  readonly opts: PublishOptions;
  /** An unawaited core request's token (see {@link Publisher.publishRequest}). */
  readonly token?: number;
}

/** A core request published, until the flush after it tells whether anyone took it. */
interface SentRequest {
  readonly subject: string;
  /** In the compact framing when there are no headers. */
  readonly body: Uint8Array;
  readonly headers: MsgHdrs | undefined;
  /** `send` waits for the flush (the subject is not known to have a subscriber). */
  readonly awaited: boolean;
  noResponders: boolean;
}

/** Longest an unawaited core request is kept before the flush that lets it go, in ms. */
const FORGET_EVERY_MS = 20;
/** Period of the clock that times out JetStream acknowledgements, in milliseconds. */
const ACK_SWEEP_MS = 50;
const utf8 = new TextDecoder();

interface AwaitedAck {
  resolve: () => void;
  reject: (err: Error) => void;
  readonly deadline: number;
  readonly timeoutMs: number;
}

/**
 * Sends frames: commands and events into JetStream, confirmed by the stream's acknowledgement;
 * replies on core NATS, confirmed by a flush; requests on core NATS (or into JetStream, with
 * `requests: "jetstream"`).
 *
 * A core request carries a reply subject on this publisher's no-responders inbox,
 * `{nrPrefix}.{n}`: when no subscriber takes the subject, the server answers there with a 503
 * status before it answers the flush (PING) that follows, so `send` knows at once. Nothing else
 * ever comes there: the service replies to the frame's own reply address.
 *
 * Waiting for that flush costs a round trip per send, so it is awaited only until a subject has
 * shown a subscriber: after that a request resolves once written, and a 503 that still comes
 * (its last instance went in between) moves the request into the service's stream, where it
 * waits for the next instance as any request to a declared service does. The subject is then
 * awaited again. Such a request is kept until a flush written after it (one every
 * {@link FORGET_EVERY_MS} at most) is answered: its 503 comes before that, or never (kept for a
 * second instead, every request outlived the young generation, and the garbage collector's
 * copying and old-space marking cost more than the flush). Likewise a reply resolves once written while the link is up: the caller's ttl
 * covers one lost with the link.
 *
 * JetStream publish acknowledgements come back on one subscription, `{ackPrefix}.{n}`, matched by
 * `n`: `js.publish()` makes a full request per message (a reply subscription, a timer and three
 * stack-carrying errors), a fifth of the process's time under load.
 */
export class Publisher {
  readonly #deps: PublisherDeps;
  #ackPrefix = "";
  #ackSeq = 0;
  readonly #acks = new Map<string, AwaitedAck>();
  #ackSweep: NodeJS.Timeout | undefined;
  #nrPrefix = "";
  #nrSeq = 0;
  /** Core requests whose 503 may still come (until the flush after them). */
  readonly #sentRequests = new Map<number, SentRequest>();
  /** Core subjects whose last awaited request found a subscriber. */
  readonly #live = new Set<string>();
  #corked: Corked[] = [];
  /** Unawaited core requests written since the last flush {@link #forgetSoon} asked for. */
  #unflushed: number[] = [];
  #forgetTimer: NodeJS.Timeout | undefined;

  constructor(deps: PublisherDeps) {
    this.#deps = deps;
  }

  /** Subscribes the acknowledgement inbox on a new connection. */
  listen(nc: NatsConnection): void {
    this.#ackPrefix = createInbox();
    nc.subscribe(`${this.#ackPrefix}.*`, { callback: (err, msg) => this.#onPubAck(err, msg) });
    this.#nrPrefix = createInbox();
    nc.subscribe(`${this.#nrPrefix}.*`, { callback: (err, msg) => this.#onNoResponders(err, msg) });
  }

  #onNoResponders(err: Error | null, msg: Msg): void {
    if (err !== null) return;
    if (msg.headers?.code !== 503) return;
    const token = Number(msg.subject.slice(this.#nrPrefix.length + 1));
    const sent = this.#sentRequests.get(token);
    if (sent === undefined) return;
    sent.noResponders = true;
    this.#live.delete(sent.subject);
    if (sent.awaited) return;
    // Its send resolved already: the request waits in the service's stream instead.
    this.#sentRequests.delete(token);
    const { mesh } = this.#deps;
    const stream = rpcSubject(mesh, nameOfRequestSubject(mesh, sent.subject));
    // A stream stores the headed form. (Our own compact bytes decode; a throw here would end
    // the connection's read loop: nats.js runs this callback unguarded.)
    let stored: { body: Uint8Array; headers: MsgHdrs };
    try {
      stored =
        sent.headers === undefined
          ? expandCompactFrame(sent.body)
          : { body: sent.body, headers: sent.headers };
    } catch (err) {
      this.#deps.logger.warn(
        "request found no instance and cannot be stored; the caller times out",
        {
          subject: sent.subject,
          error: err,
        },
      );
      return;
    }
    this.publishConfirmed(stream, stored.body, stored.headers).catch((err: unknown) => {
      this.#deps.logger.warn("request found no instance and no stream; the caller times out", {
        subject: sent.subject,
        error: err,
      });
    });
  }

  /**
   * Publishes at the end of this turn of the event loop, with every other core request and reply
   * written in it: nats.js writes its buffer to the socket once per microtask checkpoint, and the
   * promise chains of concurrent calls reach `publish` at many checkpoints of a turn (a write
   * each, a tenth of the process's time at c=64).
   */
  #publishSoon(
    nc: NatsConnection,
    subject: string,
    body: Uint8Array,
    opts: PublishOptions,
    token?: number,
  ): void {
    this.#corked.push(
      token === undefined ? { nc, subject, body, opts } : { nc, subject, body, opts, token },
    );
    if (this.#corked.length === 1) setImmediate(() => this.uncork());
  }

  /** Publishes what {@link #publishSoon} holds now (the transport closes). */
  uncork(): void {
    const corked = this.#corked;
    this.#corked = [];
    for (const { nc, subject, body, opts, token } of corked) {
      try {
        nc.publish(subject, body, opts);
      } catch (err) {
        if (token !== undefined) this.#sentRequests.delete(token);
        this.#deps.logger.warn("core publish failed; the caller times out", {
          subject,
          error: err,
        });
        continue;
      }
      if (token !== undefined) this.#unflushed.push(token);
    }
    if (this.#unflushed.length > 0) this.#forgetSoon();
  }

  /**
   * Within {@link FORGET_EVERY_MS}, flushes once and forgets the requests written before it when
   * it is answered (or fails). A flush per batch would cost a PONG to read per request at c=1.
   */
  #forgetSoon(): void {
    if (this.#forgetTimer !== undefined) return;
    this.#forgetTimer = setTimeout(() => {
      this.#forgetTimer = undefined;
      const tokens = this.#unflushed;
      this.#unflushed = [];
      const forget = (): void => {
        for (const token of tokens) this.#sentRequests.delete(token);
      };
      // Written on a connection since replaced, they get no 503 any more.
      const nc = this.#deps.link.nc;
      if (nc === undefined || nc.isClosed()) return forget();
      this.#deps.link.flushSoon(nc).then(forget, forget);
    }, FORGET_EVERY_MS);
    this.#forgetTimer.unref();
  }

  /**
   * Publishes a request on core NATS to `subject` and resolves once the server has it (a flush
   * shared with the publishes around it), or, once the subject has shown a subscriber and
   * `confirm` is not set, once written (see the class).
   * @throws NuropbNotDeliveredError when no instance is subscribed to `subject`.
   * @throws the client's error (untranslated) when the link fails meanwhile.
   */
  async publishRequest(
    nc: NatsConnection,
    subject: string,
    body: Uint8Array,
    headers: MsgHdrs | undefined,
    confirm = false,
  ): Promise<void> {
    const { link } = this.#deps;
    if (!link.up) await link.ready(Date.now() + this.#deps.publishTimeoutMs);
    const token = ++this.#nrSeq;
    const awaited = confirm || !this.#live.has(subject);
    const sent: SentRequest = { subject, body, headers, awaited, noResponders: false };
    this.#sentRequests.set(token, sent);
    const reply = `${this.#nrPrefix}.${String(token)}`;
    const opts: PublishOptions = headers === undefined ? { reply } : { headers, reply };
    if (!awaited) {
      this.#publishSoon(nc, subject, body, opts, token);
      return;
    }
    try {
      nc.publish(subject, body, opts);
      await link.flushSoon(nc);
    } finally {
      this.#sentRequests.delete(token);
    }
    if (!sent.noResponders) this.#live.add(subject);
    else {
      throw new NuropbNotDeliveredError(`no responders on '${subject}'`, {
        details: { subject },
      });
    }
  }

  /**
   * Sends `frame` to `to` and resolves once the broker has it.
   * @throws NuropbNotDeliveredError when no service takes requests for `to.service`.
   * @throws NuropbMessageError for an address NATS cannot carry or a frame the server refuses.
   */
  async send(nc: NatsConnection, to: Destination, frame: Frame): Promise<void> {
    const mesh = this.#deps.mesh;
    assertFrameTtl(frame.ttlMs); // as every transport: refused here, refused everywhere
    const core =
      to.kind === "rpc" &&
      this.#deps.requests === "core" &&
      frame.headers.nuropb_type === MessageType.request;
    // A core request is stamped with its send time: core NATS keeps none, and the ttl runs from it.
    const sentAtMs = core ? Date.now() : undefined;
    // Encoded before anything is sent: a bad header value is the caller's TypeError, as is.
    const compact =
      this.#deps.coreFraming === "compact" && (core || to.kind === "reply")
        ? encodeCompactFrame(frame, sentAtMs)
        : undefined;
    const headers = compact === undefined ? encodeFrameHeaders(frame, sentAtMs) : undefined;
    // One id per send, reused by every attempt: a publish the stream stored before its
    // acknowledgement was lost to a disconnect is not stored again (duplicate window).
    const msgID = core || to.kind === "reply" ? undefined : nuid.next();
    switch (to.kind) {
      case "rpc": {
        if (!isLiteralSubject(to.service)) {
          throw new NuropbNotDeliveredError(`no service can be named '${to.service}' on NATS`);
        }
        if (core) {
          try {
            const subject = requestSubject(mesh, to.service);
            await this.publishRequest(nc, subject, compact ?? frame.body, headers);
            return;
          } catch (err) {
            if (!(err instanceof NuropbNotDeliveredError)) {
              throw this.#translate(err, `send to service '${to.service}'`);
            }
          }
          // No instance subscribes now. A service declared before keeps its stream (between two
          // instances, say): the request waits there for the next one, or its ttl. A service never
          // declared has none: NuropbNotDeliveredError, as below.
        }
        try {
          await this.publishConfirmed(
            rpcSubject(mesh, to.service),
            frame.body,
            headers ?? encodeFrameHeaders(frame, sentAtMs),
            msgID ?? nuid.next(),
          );
        } catch (err) {
          if (natsCode(err) === ErrorCode.NoResponders) {
            throw new NuropbNotDeliveredError(`no service '${to.service}' on mesh '${mesh}'`, {
              cause: err,
              details: { service: to.service },
            });
          }
          throw this.#translate(err, `send to service '${to.service}'`);
        }
        return;
      }
      case "event": {
        if (!isLiteralSubject(to.topic)) {
          throw new NuropbMessageError(
            `'${to.topic}' is not a valid event topic (dot-separated words, no wildcards)`,
          );
        }
        try {
          await this.publishConfirmed(
            eventSubject(mesh, to.topic),
            frame.body,
            headers ?? encodeFrameHeaders(frame),
            msgID,
          );
        } catch (err) {
          // No events stream yet: no service subscribes to any event, so nobody misses this one.
          if (natsCode(err) === ErrorCode.NoResponders) return;
          throw this.#translate(err, `publish event '${to.topic}'`);
        }
        return;
      }
      case "reply": {
        if (!isLiteralSubject(to.address)) {
          throw new NuropbMessageError(`'${to.address}' is not a valid reply address on NATS`);
        }
        try {
          await this.#publishReply(
            nc,
            replySubject(mesh, to.address),
            compact ?? frame.body,
            headers,
          );
        } catch (err) {
          throw this.#translate(err, `reply to '${to.address}'`);
        }
        return;
      }
    }
  }

  #translate(err: unknown, what: string): Error {
    return translateNatsError(err, what, this.#deps.life);
  }

  /**
   * Publishes to JetStream and waits for its acknowledgement. A publish caught by a disconnect is
   * sent again once the link is back (within `publishTimeoutMs`) with the same `msgID`, so the
   * stream stores it once if the first one got there (within the stream's duplicate window).
   * Rejects with the client's errors, untranslated.
   */
  async publishConfirmed(
    subject: string,
    body: Uint8Array,
    headers: MsgHdrs,
    msgID?: string,
  ): Promise<void> {
    const { link, life } = this.#deps;
    const deadline = Date.now() + this.#deps.publishTimeoutMs;
    for (;;) {
      if (!link.up) await link.ready(deadline);
      try {
        await this.#jsPublish(subject, body, headers, Math.max(1, deadline - Date.now()), msgID);
        return;
      } catch (err) {
        // A link loss rejects every publish awaiting its acknowledgement with Disconnect.
        if (
          natsCode(err) !== ErrorCode.Disconnect ||
          Date.now() >= deadline ||
          life.state !== LifecycleState.open
        )
          throw err;
      }
      this.#deps.logger.debug("publish caught by a disconnect; sending again", { subject });
    }
  }

  /** Publishes into JetStream and resolves on the stream's acknowledgement (see the class). */
  #jsPublish(
    subject: string,
    body: Uint8Array,
    headers: MsgHdrs,
    timeoutMs: number,
    msgID?: string,
  ): Promise<void> {
    const nc = this.#deps.link.nc;
    if (nc === undefined || nc.isClosed()) {
      return Promise.reject(natsError("NATS connection closed", ErrorCode.ConnectionClosed));
    }
    if (msgID !== undefined) headers.set("Nats-Msg-Id", msgID);
    const token = String(++this.#ackSeq);
    return new Promise<void>((resolve, reject) => {
      this.#acks.set(token, { resolve, reject, deadline: Date.now() + timeoutMs, timeoutMs });
      try {
        nc.publish(subject, body, { headers, reply: `${this.#ackPrefix}.${token}` });
      } catch (err) {
        this.#acks.delete(token);
        reject(err as Error);
        return;
      }
      this.#sweepAcksSoon();
    });
  }

  /**
   * One clock for every acknowledgement awaited (a timer per publish cost more than the publish):
   * rejects those past their deadline, at most {@link ACK_SWEEP_MS} late, and stops when none
   * are left.
   */
  #sweepAcksSoon(): void {
    if (this.#ackSweep !== undefined) return;
    this.#ackSweep = setInterval(() => {
      const now = Date.now();
      for (const [token, waiting] of this.#acks) {
        if (waiting.deadline > now) continue;
        this.#acks.delete(token);
        waiting.reject(
          natsError(
            `no JetStream acknowledgement within ${String(waiting.timeoutMs)} ms`,
            ErrorCode.Timeout,
          ),
        );
      }
      if (this.#acks.size === 0) {
        clearInterval(this.#ackSweep);
        this.#ackSweep = undefined;
      }
    }, ACK_SWEEP_MS);
    this.#ackSweep.unref();
  }

  #onPubAck(err: Error | null, msg: Msg): void {
    if (err !== null) return; // the subscription closes with the connection
    const token = msg.subject.slice(this.#ackPrefix.length + 1);
    const waiting = this.#acks.get(token);
    if (waiting === undefined) return; // timed out or abandoned meanwhile
    this.#acks.delete(token);
    const status = msg.headers?.code ?? 0;
    if (status === 503) {
      waiting.reject(
        natsError("no responders: no stream captures the subject", ErrorCode.NoResponders),
      );
      return;
    }
    if (status >= 400) {
      waiting.reject(
        natsError(msg.headers?.description ?? `status ${String(status)}`, String(status)),
      );
      return;
    }
    let ack: { error?: { code?: number; err_code?: number; description?: string } };
    try {
      ack = JSON.parse(utf8.decode(msg.data)) as typeof ack;
    } catch (parseErr) {
      waiting.reject(parseErr as Error);
      return;
    }
    if (ack.error !== undefined) {
      waiting.reject(
        natsError(
          ack.error.description ?? "JetStream refused the message",
          String(ack.error.code ?? ack.error.err_code ?? "500"),
          { api_error: ack.error },
        ),
      );
      return;
    }
    waiting.resolve();
  }

  /** The link is lost (or the transport ending): every acknowledgement awaited is given up. */
  abandonConfirms(): void {
    // Their publishes are sent again (or given up) by publishConfirmed; a late ack is ignored.
    const waiting = [...this.#acks.values()];
    this.#acks.clear();
    for (const w of waiting) w.reject(natsError("NATS link lost", ErrorCode.Disconnect));
  }

  /** Publishes on core NATS and flushes; sent again if a disconnect swallowed it. */
  async #publishReply(
    nc: NatsConnection,
    subject: string,
    body: Uint8Array,
    headers: MsgHdrs | undefined,
  ): Promise<void> {
    const { link } = this.#deps;
    const opts: PublishOptions = headers === undefined ? {} : { headers };
    if (link.up) {
      this.#publishSoon(nc, subject, body, opts);
      return;
    }
    const deadline = Date.now() + this.#deps.publishTimeoutMs;
    for (;;) {
      await link.ready(deadline);
      nc.publish(subject, body, opts);
      try {
        await link.flushSoon(nc);
        return;
      } catch (err) {
        if (natsCode(err) !== ErrorCode.Disconnect || Date.now() >= deadline) throw err;
      }
    }
  }
}

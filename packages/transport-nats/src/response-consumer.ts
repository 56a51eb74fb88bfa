import {
  Empty,
  ErrorCode,
  headers as natsHeaders,
  type Msg,
  type NatsConnection,
  type NatsError,
  type Subscription,
} from "nats";
import type { Listener, Logger, ResponseHandler } from "@nuropb/protocol";
import { copyBytes } from "@nuropb/protocol/transport-kit";
import { decodeCompactFrame, isCompactFrame } from "./compact-frame.ts";
import { decodeFrameHeaders, inboundFrame, NatsHeader } from "./frame-headers.ts";
import { natsCode } from "./nats-errors.ts";

/** What a {@link ResponseConsumer} needs from its transport. */
export interface ResponseConsumerDeps {
  readonly nc: NatsConnection;
  /** The response address, and its subject on core NATS. */
  readonly address: string;
  readonly subject: string;
  readonly handler: ResponseHandler;
  readonly logger: Logger;
  readonly onStopped: () => void;
}

/** Longest the probe of a response address waits for an answer, in milliseconds. */
const PROBE_TIMEOUT_MS = 1_000;

/**
 * Asks whether a consumer already answers on a response subject (an exclusive consumer asks
 * before taking it): a probe that no one answers, or that times out, tells.
 * @throws the client's error when the probe fails otherwise.
 */
export async function isResponseSubjectTaken(
  nc: NatsConnection,
  subject: string,
): Promise<boolean> {
  const probe = natsHeaders();
  probe.set(NatsHeader.probe, "1");
  try {
    await nc.request(subject, Empty, { timeout: PROBE_TIMEOUT_MS, headers: probe });
    return true;
  } catch (err) {
    const code = natsCode(err);
    if (code === ErrorCode.NoResponders) return false;
    if (code === ErrorCode.Timeout) return true;
    throw err;
  }
}

/**
 * The responses of one participant: a plain subscription on its reply subject (responses do
 * not go through JetStream). It answers probes, so another consumer sees the address is taken.
 */
export class ResponseConsumer implements Listener {
  #sub: Subscription | undefined;
  readonly #deps: ResponseConsumerDeps;

  constructor(deps: ResponseConsumerDeps) {
    this.#deps = deps;
    this.#sub = deps.nc.subscribe(deps.subject, {
      callback: (err, msg) => this.#onMessage(err, msg),
    });
  }

  #onMessage(err: NatsError | null, msg: Msg): void {
    const { address, logger } = this.#deps;
    if (err !== null) {
      logger.warn("response subscription error", { address, error: err });
      return;
    }
    // Only a probe asks for an answer: a response has no reply subject.
    if (
      msg.reply !== undefined &&
      msg.reply !== "" &&
      msg.headers?.has(NatsHeader.probe) === true
    ) {
      if (msg.reply) msg.respond();
      return;
    }
    try {
      const headers = msg.headers;
      const data = msg.data;
      if (isCompactFrame(headers, data)) {
        const { fields, body } = decodeCompactFrame(data);
        this.#deps.handler(inboundFrame(fields, copyBytes(body), false));
        return;
      }
      this.#deps.handler(inboundFrame(decodeFrameHeaders(headers), copyBytes(data), false));
    } catch (e) {
      logger.warn("response handler failed", { address, error: e });
    }
  }

  async stop(): Promise<void> {
    if (this.#sub === undefined) return;
    this.#sub.unsubscribe();
    this.#sub = undefined;
    this.#deps.onStopped();
    // Once the server has the unsubscribe, the address is free for another consumer.
    await this.#deps.nc.flush().catch(() => undefined);
  }

  /** The transport is closing. */
  shutdown(): void {
    this.#sub = undefined;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

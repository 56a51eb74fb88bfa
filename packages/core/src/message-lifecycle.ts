import { isNuropbError, type Logger } from "@nuropb/protocol";

/**
 * The states a message goes through, named exactly as Python NuroPb's `NuropbLifecycleState`
 * (interface.py). A client's side: `client-start` … `client-end`; a service's side:
 * `service-receive` … `service-ack`.
 */
export const MessageLifecycleState = {
  clientStart: "client-start",
  clientEncode: "client-encode",
  clientSend: "client-send",
  serviceReceive: "service-receive",
  serviceDecode: "service-decode",
  serviceHandle: "service-handle",
  serviceEncode: "service-encode",
  serviceReply: "service-reply",
  serviceAck: "service-ack",
  clientReceive: "client-receive",
  clientDecode: "client-decode",
  clientHandle: "client-handle",
  clientAck: "client-ack",
  clientEnd: "client-end",
} as const;
/** One of {@link MessageLifecycleState}. */
export type MessageLifecycleState =
  (typeof MessageLifecycleState)[keyof typeof MessageLifecycleState];

/** One transition of one message, as the `onLifecycle` listener gets it. */
export interface LifecycleTransition {
  readonly state: MessageLifecycleState;
  /** When, in ms since the epoch, with sub-millisecond precision (monotonic within a process). */
  readonly at: number;
  /** The message's type; undefined for a message that could not be read. */
  readonly type: "request" | "command" | "event" | undefined;
  readonly correlationId: string;
  readonly traceId: string | null;
  /** The called service (a client's side) or this service (a service's side). */
  readonly service: string | undefined;
  /** Requests and commands, once known (not yet at `service-receive` / `service-decode`). */
  readonly method: string | undefined;
  /** Events, once known. */
  readonly topic: string | undefined;
  readonly encrypted: boolean;
  /** `service-ack`: how the message was settled. */
  readonly settlement?: "ack" | "requeue" | "reject";
  /**
   * The error's wire name (`NuropbValidationError`…, or a JavaScript error's name): on
   * `client-end` when the call failed, on `service-reply` when the response carries an error.
   */
  readonly error?: string;
}

/**
 * Gets every message's transitions (`onLifecycle` of `createClient` / `createService`). It is
 * called synchronously on the message's path: keep it quick (hand the figures to a metrics
 * library). What it throws (or a promise it returns rejects with) is logged and ignored.
 */
export type LifecycleListener = (transition: LifecycleTransition) => void;

/** What a flow knows of its message; filled in as the message is read. */
export interface FlowFields {
  type: LifecycleTransition["type"];
  correlationId: string;
  traceId: string | null;
  service: string | undefined;
  method: string | undefined;
  topic: string | undefined;
  encrypted: boolean;
}

/** Extra fields of one transition. */
type Extra = Pick<LifecycleTransition, "settlement" | "error">;

const origin = performance.timeOrigin;

/**
 * One message's flow through a participant: reports its transitions to the listener. Made only
 * when there is a listener, so a participant without one pays nothing.
 */
export class MessageFlow {
  readonly fields: FlowFields;
  readonly #listener: LifecycleListener;
  readonly #log: Logger;

  constructor(listener: LifecycleListener, log: Logger, fields: FlowFields) {
    this.#listener = listener;
    this.#log = log;
    this.fields = fields;
  }

  /** Reports `state` now; never throws. */
  emit(state: MessageLifecycleState, extra?: Extra): void {
    const f = this.fields;
    const t: LifecycleTransition = {
      state,
      at: origin + performance.now(),
      type: f.type,
      correlationId: f.correlationId,
      traceId: f.traceId,
      service: f.service,
      method: f.method,
      topic: f.topic,
      encrypted: f.encrypted,
      ...extra,
    };
    try {
      const r: unknown = this.#listener(t);
      if (r instanceof Promise) r.catch((err: unknown) => this.#failed(state, err));
    } catch (err) {
      this.#failed(state, err);
    }
  }

  #failed(state: MessageLifecycleState, err: unknown): void {
    this.#log.warn("the onLifecycle listener threw; ignored", {
      state,
      correlationId: this.fields.correlationId,
      error: String((err as Error)?.message ?? err),
    });
  }
}

/**
 * A flow for one message when there is a listener; undefined (nothing measured, nothing made)
 * without one.
 */
export function createFlow(
  listener: LifecycleListener | undefined,
  log: Logger,
  type: FlowFields["type"],
  correlationId: string,
  traceId: string | null,
  service: string | undefined,
  method: string | undefined,
  topic: string | undefined,
  encrypted: boolean,
): MessageFlow | undefined {
  if (listener === undefined) return undefined;
  const fields = { type, correlationId, traceId, service, method, topic, encrypted };
  return new MessageFlow(listener, log, fields);
}

/** The name a transition gives an error: its wire name, or a JavaScript error's name. */
export function errorName(err: unknown): string {
  if (isNuropbError(err)) return err.wireName;
  return err instanceof Error ? err.name : typeof err;
}

/**
 * Checks `onLifecycle`.
 * @throws TypeError when it is given and not a function.
 */
export function checkLifecycleListener(value: unknown): LifecycleListener | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "function") {
    throw new TypeError(
      `options.onLifecycle must be a function (transition) => void, got ${value === null ? "null" : typeof value}`,
    );
  }
  return value as LifecycleListener;
}

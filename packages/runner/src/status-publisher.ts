import { STATUS_TOPIC, type ParticipantStatus, type StatusEvent } from "@nuropb/core";
import { encodePayload, newId, type Logger, type Transport } from "@nuropb/protocol";

/**
 * Reports one participant's state on its transport, straight (not through the participant, so
 * `stopped` goes out after it has disconnected). A report that fails is logged, never thrown.
 */
export class StatusPublisher {
  readonly #transport: Transport;
  readonly #service: string | null;
  readonly #instanceId: string;
  readonly #heartbeatMs: number;
  readonly #log: Logger;
  #state: ParticipantStatus = "starting";
  #leader = false;
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(parts: {
    readonly transport: Transport;
    readonly service: string | undefined;
    readonly instanceId: string;
    readonly heartbeatMs: number;
    readonly log: Logger;
  }) {
    this.#transport = parts.transport;
    this.#service = parts.service ?? null;
    this.#instanceId = parts.instanceId;
    this.#heartbeatMs = parts.heartbeatMs;
    this.#log = parts.log;
  }

  /** Reports `state` (and leadership) now, and from then on at every heartbeat. */
  async report(state: ParticipantStatus, leader: boolean): Promise<void> {
    if (this.#state === "stopped") return;
    this.#state = state;
    this.#leader = leader;
    if (state === "stopped") {
      clearInterval(this.#timer);
      this.#timer = undefined;
    } else {
      this.#timer ??= setInterval(() => void this.#send(), this.#heartbeatMs);
      this.#timer.unref?.();
    }
    await this.#send();
  }

  /** Stops the heartbeat without a last report (the transport is gone). */
  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  async #send(): Promise<void> {
    const event: StatusEvent = {
      type: "nuropb_status",
      service: this.#service,
      instance_id: this.#instanceId,
      state: this.#state,
      leader: this.#leader,
      heartbeat_ms: this.#heartbeatMs,
      at: new Date().toISOString(),
    };
    try {
      const frame = encodePayload({
        tag: "event",
        topic: STATUS_TOPIC,
        event,
        context: {},
        trace_id: null,
        correlation_id: newId(),
        target: null,
      });
      await this.#transport.send({ kind: "event", topic: STATUS_TOPIC }, frame);
    } catch (err) {
      this.#log.debug("status report not sent", { state: event.state, error: String(err) });
    }
  }
}

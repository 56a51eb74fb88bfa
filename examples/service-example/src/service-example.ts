import type { RequestContext } from "@nuropb/core";
import { NuropbCallAgain, NuropbError, NuropbSuccess } from "@nuropb/protocol";

/** An event as `handleEvent` receives it. */
export interface ExampleEvent {
  readonly topic: string;
  readonly event: unknown;
  readonly target: readonly string[] | null;
  readonly context: Readonly<Record<string, unknown>>;
  readonly traceId: string | null;
}

/**
 * What a service can do: each public method shows one behaviour. Names follow the Python
 * NuroPb `ServiceExample`.
 */
export class ServiceExample {
  readonly #name: string;
  readonly #onEvent: (event: ExampleEvent) => void;
  #calls = 0;
  /** Correlation ids of calls that asked to be called again (see `call_again`). */
  readonly #retried = new Set<string>();

  constructor(name: string, onEvent: (event: ExampleEvent) => void = () => {}) {
    this.#name = name;
    this.#onEvent = onEvent;
  }

  /** A plain method: its return value is the result. */
  test_method(): string {
    return `response from ${this.#name}.test_method`;
  }

  /** An async method: the caller gets what the promise resolves to. */
  async test_async_method(): Promise<string> {
    await new Promise((resolve) => setTimeout(resolve, 10));
    return `response from ${this.#name}.test_async_method`;
  }

  /** State lives on the instance (each instance of a service has its own). */
  sync_method(): number {
    return ++this.#calls;
  }

  async async_method(): Promise<number> {
    return ++this.#calls;
  }

  /** Any other exception reaches the caller as `NuropbError` (wire `NuropbException`), with its message. */
  method_with_exception(): never {
    throw new Error("Test sync exception");
  }

  async async_method_with_exception(): Promise<never> {
    throw new Error("Test async method exception");
  }

  /** A NuroPb error reaches the caller as itself. */
  method_with_nuropb_exception(): never {
    throw new NuropbError("Test Nuropb Exception");
  }

  /** `NuropbSuccess` answers with a result and publishes events after the response. */
  success_with_events(): never {
    throw new NuropbSuccess(`response from ${this.#name}.success_with_events`, [
      { topic: "test-event", event: { event_key: "from NuropbSuccess" } },
    ]);
  }

  /** `ctx.addEvent` does the same from an ordinary return; events go only if the method succeeds. */
  add_event(_params: Record<string, never>, ctx: RequestContext): string {
    ctx.addEvent({ topic: "test-event", event: { event_key: "from ctx.addEvent" } });
    return `response from ${this.#name}.add_event`;
  }

  /**
   * `NuropbCallAgain` puts the message back once (say, a resource is not ready yet); the second
   * delivery succeeds here. A handler that asks twice gets the caller a `NuropbCallAgainReject`.
   */
  call_again(_params: Record<string, never>, ctx: RequestContext): string {
    if (!this.#retried.has(ctx.correlationId)) {
      this.#retried.add(ctx.correlationId);
      throw new NuropbCallAgain("not ready yet, call again");
    }
    this.#retried.delete(ctx.correlationId);
    return `response from ${this.#name}.call_again on the second delivery`;
  }

  call_again_always(): never {
    throw new NuropbCallAgain("never ready");
  }

  /** Receives the events matching the service's `eventBindings`. */
  handleEvent(event: ExampleEvent): void {
    this.#onEvent(event);
  }
}

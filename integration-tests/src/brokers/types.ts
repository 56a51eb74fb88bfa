/** A broker process the harness started for this test run. */
export interface StartedBroker {
  /** Values handed to the tests through vitest's `provide` / `inject`. */
  readonly provide: Readonly<Record<string, string>>;
  /** Stops the process and removes its data directory. */
  stop(): Promise<void>;
}

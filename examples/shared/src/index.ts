/** Options of every example's `main()`; the defaults are what `npm start` uses. */
export interface MainOptions {
  /** Receives each line the example prints. @defaultValue console.log */
  readonly print?: (line: string) => void;
  /** RabbitMQ URL; empty means the memory transport. @defaultValue process.env.NUROPB_AMQP_URL */
  readonly amqpUrl?: string;
  /** Stops a service running on RabbitMQ, as SIGINT and SIGTERM do. */
  readonly signal?: AbortSignal;
}

/** A printer that also keeps every line (`main()` returns them; the smoke tests compare them). */
export function createPrinter(options: MainOptions): {
  readonly lines: string[];
  print(line: string): void;
} {
  const lines: string[] = [];
  return {
    lines,
    print(line: string): void {
      lines.push(line);
      (options.print ?? console.log)(line);
    },
  };
}

/** The RabbitMQ URL to use, or "" for the memory transport. */
export function amqpUrlOf(options: MainOptions): string {
  return options.amqpUrl ?? process.env.NUROPB_AMQP_URL ?? "";
}

/** Resolves on SIGINT, SIGTERM or when `signal` aborts. */
export function untilStopped(signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const stop = (): void => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      signal?.removeEventListener("abort", stop);
      resolve();
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
    if (signal?.aborted === true) stop();
    else signal?.addEventListener("abort", stop);
  });
}

/** Runs `main` when `moduleUrl` is the program being run (not when a test imports it). */
export function runIfMain(moduleUrl: string, main: () => Promise<unknown>): void {
  if (moduleUrl !== `file://${process.argv[1] ?? ""}`) return;
  main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}

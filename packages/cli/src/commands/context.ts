import { milliseconds, type BrokerUrl } from "../args.ts";
import type { CliIo } from "../io.ts";
import type { Output } from "../output.ts";
import type { TransportFactory } from "../session.ts";

/** Options every command accepts (`nuropb --help`). */
export interface GlobalOptions {
  /** `--url`: the broker. */
  readonly url?: string;
  /** `--management-url`: the management API base. */
  readonly managementUrl?: string;
  /** `--connect-timeout`, in milliseconds, as typed. */
  readonly connectTimeout?: string;
}

/** What a command runs with. */
export interface CommandContext {
  /** Environment, streams and the interrupt signal. */
  readonly io: CliIo;
  /** Where and how to write. */
  readonly output: Output;
  /** The global options as parsed. */
  readonly globals: GlobalOptions;
  /** Makes the transport of `describe`, `call`, `command` and `publish`. */
  readonly createTransport: TransportFactory;
  /** Remembers the broker URL once parsed, so error reports can scrub its password. */
  useBroker(broker: BrokerUrl): BrokerUrl;
}

/** Default `--connect-timeout`, in milliseconds. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;

/**
 * The `--connect-timeout` in milliseconds.
 * @throws CliError (usage) for a value that is not a positive whole number.
 */
export function connectTimeoutOf(cx: CommandContext): number {
  const text = cx.globals.connectTimeout;
  return text === undefined ? DEFAULT_CONNECT_TIMEOUT_MS : milliseconds(text, "--connect-timeout");
}

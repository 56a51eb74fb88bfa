import { normaliseDescription } from "@nuropb/core";
import { DESCRIBE_METHOD } from "@nuropb/protocol";
import { brokerUrl, milliseconds, serviceName } from "../args.ts";
import { CliError, ExitCode } from "../errors.ts";
import { formatDescription } from "../format.ts";
import { openSession } from "../session.ts";
import { DEFAULT_CALL_TTL_MS, printRemoteError } from "./call.ts";
import { connectTimeoutOf, type CommandContext } from "./context.ts";

/** Options of `nuropb describe`. */
export interface DescribeOptions {
  /** `--json`: print the (normalised) description as JSON. */
  readonly json?: boolean;
  /** `--ttl`: how long to wait for the answer, in milliseconds, as typed. @defaultValue 10000 */
  readonly ttl?: string;
}

/** `nuropb describe <service>`: the service's methods, parameters and flags, as a table or JSON. */
export async function describeCommand(
  cx: CommandContext,
  service: string,
  opts: DescribeOptions,
): Promise<ExitCode> {
  serviceName(service);
  const ttlMs = opts.ttl === undefined ? DEFAULT_CALL_TTL_MS : milliseconds(opts.ttl, "--ttl");
  const connectTimeoutMs = connectTimeoutOf(cx);
  const broker = cx.useBroker(brokerUrl(cx.globals.url, cx.io.env));
  const { output } = cx;
  const session = await output.spin(`connecting to ${broker.shown}`, () =>
    openSession(broker, { connectTimeoutMs }, cx.createTransport),
  );
  try {
    const response = await output.spin(`describing ${service}`, () =>
      session.client.request(
        service,
        DESCRIBE_METHOD,
        {},
        {},
        {
          ttlMs,
          rpcResponse: false,
          ...(cx.io.signal !== undefined ? { signal: cx.io.signal } : {}),
        },
      ),
    );
    if (response.error !== null) {
      printRemoteError(cx, response.error);
      return ExitCode.remote;
    }
    let description;
    try {
      description = normaliseDescription(response.result);
    } catch {
      throw new CliError(
        `${service} answered ${DESCRIBE_METHOD} with something that is not a description`,
        ExitCode.remote,
      );
    }
    if (opts.json === true) {
      output.data(`${JSON.stringify(description, null, 2)}\n`);
      return ExitCode.ok;
    }
    const raw = (response.result as { methods?: Record<string, unknown> }).methods ?? {};
    const authKnown = (method: string): boolean => {
      const m = raw[method];
      return typeof m === "object" && m !== null && "requires_authorization" in m;
    };
    output.data(formatDescription(description, output.out, authKnown));
    return ExitCode.ok;
  } finally {
    await session.close();
  }
}

import { toWireJson, type ErrorPayload } from "@nuropb/protocol";
import { brokerUrl, jsonObject, methodName, milliseconds, serviceName } from "../args.ts";
import { ExitCode } from "../errors.ts";
import { openSession } from "../session.ts";
import { connectTimeoutOf, type CommandContext } from "./context.ts";

/** Options of `nuropb call` and `nuropb command`. */
export interface CallOptions {
  /** `--context`: a JSON object, as typed. */
  readonly context?: string;
  /** `--ttl`: time-to-live and timeout in milliseconds, as typed. @defaultValue 10000 */
  readonly ttl?: string;
  /** `--encrypted`: seal the call end to end. */
  readonly encrypted?: boolean;
  /** `--trace-id`. @defaultValue a fresh id */
  readonly traceId?: string;
}

/** Default ttl of a call, in milliseconds: short enough for a person waiting at a terminal. */
export const DEFAULT_CALL_TTL_MS = 10_000;

/**
 * `nuropb call` (`kind: "request"`: prints the result as JSON) and `nuropb command`
 * (`kind: "command"`: fire and forget). A service's error is printed as `Class: description`
 * and exits 3.
 */
export async function callCommand(
  cx: CommandContext,
  kind: "request" | "command",
  service: string,
  method: string,
  paramsJson: string | undefined,
  opts: CallOptions,
): Promise<ExitCode> {
  serviceName(service);
  methodName(method);
  const params = jsonObject(paramsJson, "params");
  const context = jsonObject(opts.context, "--context");
  const ttlMs = opts.ttl === undefined ? DEFAULT_CALL_TTL_MS : milliseconds(opts.ttl, "--ttl");
  const connectTimeoutMs = connectTimeoutOf(cx);
  const broker = cx.useBroker(brokerUrl(cx.globals.url, cx.io.env));
  const { output } = cx;

  const session = await output.spin(`connecting to ${broker.shown}`, () =>
    openSession(broker, { connectTimeoutMs }, cx.createTransport),
  );
  const options = {
    ttlMs,
    ...(opts.traceId !== undefined ? { traceId: opts.traceId } : {}),
    ...(opts.encrypted === true ? { encrypted: true } : {}),
  };
  try {
    if (kind === "command") {
      await output.spin(`sending ${service}.${method}`, () =>
        session.client.command(service, method, params, context, options),
      );
      output.note(output.err.green(`command sent to ${service}.${method}`));
      return ExitCode.ok;
    }
    const response = await output.spin(`calling ${service}.${method}`, () =>
      session.client.request(service, method, params, context, {
        ...options,
        rpcResponse: false,
        ...(cx.io.signal !== undefined ? { signal: cx.io.signal } : {}),
      }),
    );
    if (response.error !== null) {
      printRemoteError(cx, response.error);
      return ExitCode.remote;
    }
    output.data(`${toWireJson(response.result ?? null, { indent: 2 })}\n`);
    return ExitCode.ok;
  } finally {
    await session.close();
  }
}

/** Prints what a service answered with: its error class and description, and a hint if we have one. */
export function printRemoteError(cx: CommandContext, error: ErrorPayload): void {
  const { output } = cx;
  output.note(`${output.err.red(error.error)}: ${error.description}`);
  const hint = remoteHint(error);
  if (hint !== undefined) output.note(output.err.dim(`hint: ${hint}`));
}

function remoteHint(error: ErrorPayload): string | undefined {
  if (error.details?.reason === "encryption-required") return "add --encrypted";
  if (error.error === "NuropbAuthenticationError") {
    return `pass a token: --context '{"Authorization":"Bearer <token>"}'`;
  }
  if (error.error === "NuropbValidationError") {
    return "`nuropb describe <service>` shows the parameters each method takes";
  }
  if (error.error === "NuropbHandlingError" && error.description.startsWith("Unknown method")) {
    return "`nuropb describe <service>` lists the methods";
  }
  return undefined;
}

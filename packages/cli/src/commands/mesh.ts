import { eventLogOf, type EventLogRetention, type Transport } from "@nuropb/protocol";
import { configureMesh, managementUrlFromAmqpUrl, teardownMesh } from "@nuropb/transport-amqp";
import { brokerUrl, managementUrl, type BrokerUrl } from "../args.ts";
import { CliError, ExitCode, usageError } from "../errors.ts";
import { scrub } from "../scrub.ts";
import { connectTimeoutOf, type CommandContext } from "./context.ts";
import { byteSize, duration } from "./events.ts";

/** Options of `nuropb mesh setup`. */
export interface MeshSetupOptions {
  /** `--event-log-max-age`: keep events this long (`7d`, `12h`), as typed. */
  readonly eventLogMaxAge?: string;
  /** `--event-log-max-bytes`: keep at most this much (`1GiB`, `500MB`), as typed. */
  readonly eventLogMaxBytes?: string;
}

/** Event-log retention when only one of the two options is given: 7 days, 1 GiB. */
export const DEFAULT_EVENT_LOG_RETENTION: EventLogRetention = {
  maxAgeMs: 7 * 86_400_000,
  maxBytes: 1024 ** 3,
};

/**
 * `nuropb mesh setup`: on RabbitMQ creates the vhost, exchanges and dead-letter queue; with the
 * event-log options (any broker) also creates the mesh's event log or sets its retention.
 * Idempotent.
 */
export async function meshSetupCommand(
  cx: CommandContext,
  opts: MeshSetupOptions = {},
): Promise<ExitCode> {
  const connectTimeoutMs = connectTimeoutOf(cx);
  const retention = retentionOf(opts);
  const broker = cx.useBroker(
    brokerUrl(
      cx.globals.url,
      cx.io.env,
      retention === undefined ? { amqpFor: "`nuropb mesh setup` without --event-log-…" } : {},
    ),
  );
  // RabbitMQ: configureMesh sets the log up with the rest (it has the management API, which
  // keeps the retention in a policy); elsewhere the URL's transport does.
  if (broker.kind === "amqp") await setUpAmqpMesh(cx, broker, connectTimeoutMs, retention);
  else if (retention !== undefined) await setUpEventLog(cx, broker, connectTimeoutMs, retention);
  if (retention !== undefined) {
    const c = cx.output.out;
    cx.output.data(
      `mesh ${c.bold(broker.vhost)}: event log ${c.green("set up")}, keeps ${formatAge(retention.maxAgeMs)} and at most ${formatBytes(retention.maxBytes)}\n`,
    );
  }
  return ExitCode.ok;
}

/** The retention the options ask for; undefined when neither is given. */
function retentionOf(opts: MeshSetupOptions): EventLogRetention | undefined {
  if (opts.eventLogMaxAge === undefined && opts.eventLogMaxBytes === undefined) return undefined;
  return {
    maxAgeMs:
      opts.eventLogMaxAge === undefined
        ? DEFAULT_EVENT_LOG_RETENTION.maxAgeMs
        : duration(opts.eventLogMaxAge, "--event-log-max-age"),
    maxBytes:
      opts.eventLogMaxBytes === undefined
        ? DEFAULT_EVENT_LOG_RETENTION.maxBytes
        : byteSize(opts.eventLogMaxBytes, "--event-log-max-bytes"),
  };
}

/** Creates the mesh's event log, or sets its retention, through the URL's transport. */
async function setUpEventLog(
  cx: CommandContext,
  broker: BrokerUrl,
  connectTimeoutMs: number,
  retention: EventLogRetention,
): Promise<void> {
  const { output } = cx;
  let transport: Transport;
  try {
    transport = cx.createTransport(broker.url, { connectTimeoutMs });
  } catch (err) {
    if (err instanceof TypeError || err instanceof RangeError) {
      throw usageError(scrub(err.message, broker));
    }
    throw err;
  }
  try {
    const log = eventLogOf(transport);
    if (log === undefined) {
      throw new CliError(
        `the ${transport.kind} transport has no event log: events cannot be kept on this mesh`,
        ExitCode.transport,
      );
    }
    await output.spin(`setting up the event log of mesh ${broker.vhost}`, async () => {
      await transport.connect();
      await log.setup(retention);
    });
  } catch (err) {
    if (err instanceof CliError) throw err;
    throw new CliError(
      `cannot set up the event log of mesh ${broker.vhost} at ${broker.shown}: ${scrub((err as Error)?.message ?? String(err), broker)}`,
      ExitCode.transport,
      { cause: err },
    );
  } finally {
    await transport.close().catch(() => undefined);
  }
}

function formatAge(ms: number): string {
  for (const [unit, size] of [
    ["d", 86_400_000],
    ["h", 3_600_000],
    ["m", 60_000],
    ["s", 1_000],
  ] as const) {
    if (ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

function formatBytes(bytes: number): string {
  for (const [unit, size] of [
    ["GiB", 1024 ** 3],
    ["MiB", 1024 ** 2],
    ["KiB", 1024],
  ] as const) {
    if (bytes % size === 0) return `${bytes / size} ${unit}`;
  }
  return `${bytes} bytes`;
}

/** The vhost, exchanges and dead-letter queue of a RabbitMQ mesh (and its event log). */
async function setUpAmqpMesh(
  cx: CommandContext,
  broker: BrokerUrl,
  connectTimeoutMs: number,
  eventLog: EventLogRetention | undefined,
): Promise<void> {
  const management = managementUrl(cx.globals.managementUrl, cx.io.env);
  const { output } = cx;
  let result;
  try {
    result = await output.spin(`setting up mesh ${broker.vhost}`, () =>
      configureMesh({
        url: broker.url,
        connectTimeoutMs,
        management: {
          url: management ?? managementUrlFromAmqpUrl(broker.url),
          timeoutMs: connectTimeoutMs,
        },
        ...(eventLog === undefined ? {} : { eventLog }),
      }),
    );
  } catch (err) {
    throw meshError(err, `cannot set up mesh ${broker.vhost} at ${broker.shown}`, broker);
  }
  const c = output.out;
  output.data(
    `mesh ${c.bold(result.vhost)}: vhost ${result.vhostCreated ? c.green("created") : "already there"}\n`,
  );
  for (const name of result.declared) output.data(`  ${c.green("declared")}  ${name}\n`);
  for (const name of result.existing) output.data(`  ${c.dim("exists  ")}  ${name}\n`);
}

/** Options of `nuropb mesh teardown`. */
export interface TeardownOptions {
  /** `--yes`: confirms the deletion (required). */
  readonly yes?: boolean;
}

/** `nuropb mesh teardown --yes`: deletes the vhost and everything in it. */
export async function meshTeardownCommand(
  cx: CommandContext,
  opts: TeardownOptions,
): Promise<ExitCode> {
  const timeoutMs = connectTimeoutOf(cx);
  const broker = cx.useBroker(brokerUrl(cx.globals.url, cx.io.env, { amqpFor: "`nuropb mesh`" }));
  const management = managementUrl(cx.globals.managementUrl, cx.io.env);
  if (opts.yes !== true) {
    throw usageError(
      `mesh teardown deletes vhost '${broker.vhost}' with every queue and message in it; add --yes to confirm`,
    );
  }
  const { output } = cx;
  let existed: boolean;
  try {
    existed = await output.spin(`deleting mesh ${broker.vhost}`, () =>
      teardownMesh({
        url: broker.url,
        management: { url: management ?? managementUrlFromAmqpUrl(broker.url), timeoutMs },
      }),
    );
  } catch (err) {
    throw meshError(err, `cannot tear down mesh ${broker.vhost} at ${broker.shown}`, broker);
  }
  output.data(
    existed
      ? `mesh ${output.out.bold(broker.vhost)}: vhost deleted\n`
      : `mesh ${output.out.bold(broker.vhost)}: no such vhost, nothing to delete\n`,
  );
  return ExitCode.ok;
}

function meshError(
  err: unknown,
  what: string,
  secrets: { readonly password: string; readonly username: string },
): CliError {
  if (err instanceof TypeError) return usageError(`${what}: ${scrub(err.message, secrets)}`);
  return new CliError(
    `${what}: ${scrub((err as Error)?.message ?? String(err), secrets)}`,
    ExitCode.transport,
    {
      cause: err,
      hint: "is RabbitMQ running with the management plugin? pass --management-url when it is not at the AMQP port + 10000",
    },
  );
}

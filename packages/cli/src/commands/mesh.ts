import { configureMesh, managementUrlFromAmqpUrl, teardownMesh } from "@nuropb/transport-amqp";
import { brokerUrl, managementUrl } from "../args.ts";
import { CliError, ExitCode, usageError } from "../errors.ts";
import { scrub } from "../scrub.ts";
import { connectTimeoutOf, type CommandContext } from "./context.ts";

/** `nuropb mesh setup`: creates the vhost, exchanges and dead-letter queue; idempotent. */
export async function meshSetupCommand(cx: CommandContext): Promise<ExitCode> {
  const connectTimeoutMs = connectTimeoutOf(cx);
  const broker = cx.useBroker(brokerUrl(cx.globals.url, cx.io.env, { amqpFor: "`nuropb mesh`" }));
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
  return ExitCode.ok;
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

import { Command, CommanderError, Option } from "commander";
import { isNuropbError } from "@nuropb/protocol";
import type { BrokerUrl } from "./args.ts";
import { callCommand, type CallOptions } from "./commands/call.ts";
import { codegenCommand, type CodegenOptions } from "./commands/codegen.ts";
import {
  DEFAULT_CONNECT_TIMEOUT_MS,
  type CommandContext,
  type GlobalOptions,
} from "./commands/context.ts";
import { describeCommand, type DescribeOptions } from "./commands/describe.ts";
import { registerDlqCommands } from "./commands/dlq.ts";
import { listenCommand, type ListenOptions } from "./commands/listen.ts";
import { eventsCommand, type EventsOptions } from "./commands/events.ts";
import {
  meshSetupCommand,
  meshTeardownCommand,
  type MeshSetupOptions,
  type TeardownOptions,
} from "./commands/mesh.ts";
import { publishCommand, type PublishOptions } from "./commands/publish.ts";
import { runModuleCommand, type RunModuleOptions } from "./commands/run-module.ts";
import { servicesCommand, type ServicesOptions } from "./commands/services.ts";
import { statsCommand, type StatsOptions } from "./commands/stats.ts";
import { statusCommand, type StatusOptions } from "./commands/status.ts";
import { CliError, ExitCode, exitCodeFor } from "./errors.ts";
import type { CliIo } from "./io.ts";
import { createOutput, type Output } from "./output.ts";
import { urlTransportFactory, type TransportFactory } from "./session.ts";
import { scrub } from "./scrub.ts";

/** Version printed by `nuropb --version`. */
export const CLI_VERSION = "0.1.0";

/** Options of {@link run} beyond its io. */
export interface RunOptions {
  /**
   * Makes the transport `describe`, `stats`, `call`, `command`, `publish`, `codegen` and `run` use.
   * @defaultValue the transport of the URL's scheme: RabbitMQ, NATS or Redis
   */
  readonly createTransport?: TransportFactory;
}

/**
 * Runs the `nuropb` command line with `argv` (the arguments after the program name) and returns
 * the exit code: 0 ok, 2 usage error, 3 the service answered with an error, 4 transport error
 * (unreachable broker, not delivered, timeout), 1 anything unexpected. Never throws; messages go to
 * `io.stderr`, data (results, tables, events) to `io.stdout`.
 * @example
 * ```ts
 * const code = await run(["call", "orders", "getOrder", '{"id":"42"}'], {
 *   stdout: (t) => process.stdout.write(t),
 *   stderr: (t) => process.stderr.write(t),
 *   env: process.env,
 * });
 * ```
 */
export async function run(
  argv: readonly string[],
  io: CliIo,
  options: RunOptions = {},
): Promise<ExitCode> {
  const output = createOutput(io);
  let broker: BrokerUrl | undefined;
  let code: ExitCode = ExitCode.ok;
  const program = buildProgram(io, output, (c) => (code = c), {
    createTransport: options.createTransport ?? urlTransportFactory,
    useBroker: (b) => (broker = b),
  });
  try {
    await program.parseAsync([...argv], { from: "user" });
    return code;
  } catch (err) {
    if (err instanceof CommanderError) {
      return err.code === "commander.helpDisplayed" || err.code === "commander.version"
        ? ExitCode.ok
        : ExitCode.usage;
    }
    if (io.signal?.aborted === true) {
      output.note("interrupted");
      return ExitCode.interrupted;
    }
    return report(err, output, broker);
  }
}

/** Prints a failure as one line (plus a hint) and returns its exit code. Never a stack trace. */
function report(err: unknown, output: Output, broker: BrokerUrl | undefined): ExitCode {
  const code = exitCodeFor(err);
  const clean = (text: string): string => (broker === undefined ? text : scrub(text, broker));
  const c = output.err;
  const message = clean(err instanceof Error ? err.message : String(err));
  if (err instanceof CliError) {
    output.note(`${c.red("error:")} ${message}`);
    if (err.hint !== undefined) output.note(c.dim(`hint: ${err.hint}`));
  } else if (isNuropbError(err)) {
    output.note(`${c.red(err.name)}: ${message}`);
    const hint = HINTS[err.wireName];
    if (hint !== undefined) output.note(c.dim(`hint: ${hint}`));
  } else {
    output.note(`${c.red("error:")} ${message}`);
  }
  return code;
}

const HINTS: Readonly<Record<string, string>> = {
  NuropbNotDeliveredError: "no service is bound for that name; `nuropb services` lists the mesh",
  NuropbTimeoutError: "the service did not answer within --ttl; is it running and not overloaded?",
  NuropbTransportError: "the connection to the broker failed; try again",
  NuropbConnectionClosedError: "the connection to the broker closed; try again",
};

interface Wiring {
  readonly createTransport: TransportFactory;
  readonly useBroker: (b: BrokerUrl) => void;
}

function buildProgram(
  io: CliIo,
  output: Output,
  setCode: (code: ExitCode) => void,
  wiring: Wiring,
): Command {
  const program = new Command("nuropb");
  const context = (cmd: Command): CommandContext => ({
    io,
    output,
    globals: cmd.optsWithGlobals<GlobalOptions>(),
    createTransport: wiring.createTransport,
    useBroker: (b) => {
      wiring.useBroker(b);
      return b;
    },
  });
  const action =
    <TArgs extends unknown[]>(
      fn: (cx: CommandContext, ...args: TArgs) => Promise<ExitCode>,
    ): ((...args: unknown[]) => Promise<void>) =>
    async (...args: unknown[]) => {
      const cmd = args[args.length - 1] as Command;
      setCode(await fn(context(cmd), ...(args.slice(0, -1) as TArgs)));
    };
  const configure = (cmd: Command): Command =>
    cmd
      .exitOverride()
      .configureOutput({
        writeOut: (s) => io.stdout(s),
        writeErr: (s) => io.stderr(s),
        outputError: (s, write) => write(output.err.red(s)),
        getOutHasColors: () => output.out.isColorSupported,
        getErrHasColors: () => output.err.isColorSupported,
      })
      .showHelpAfterError(
        `(run '${cmd.name() === "nuropb" ? "nuropb" : `nuropb ${cmd.name()}`} --help' for usage)`,
      );

  configure(program)
    .description(
      "Operate a NuroPb service mesh on RabbitMQ, NATS or Redis: set it up, see what is on it, call services, publish and listen to events, run services.",
    )
    .version(CLI_VERSION, "-V, --version")
    .addOption(
      new Option(
        "--url <url>",
        "broker URL: amqp://user:password@host:5672/vhost, nats://host:4222/mesh or redis://host:6379/0?mesh=name (or NUROPB_URL, NUROPB_AMQP_URL); mesh (but for its event-log options), services and listen need RabbitMQ",
      ),
    )
    .addOption(
      new Option(
        "--management-url <url>",
        "management API, http://user:password@host:15672/api (or NUROPB_MANAGEMENT_URL; default: the AMQP port + 10000)",
      ),
    )
    .addOption(
      new Option(
        "--connect-timeout <ms>",
        `how long to try reaching the broker (default ${DEFAULT_CONNECT_TIMEOUT_MS})`,
      ),
    )
    .addHelpText(
      "after",
      "\nExit codes: 0 ok, 2 usage error, 3 the service answered with an error, 4 transport error (unreachable, not delivered, timeout).",
    );

  const mesh = configure(
    program.command("mesh").description("set up or remove a mesh (a RabbitMQ vhost)"),
  );
  configure(
    mesh
      .command("setup")
      .description(
        "create the vhost, exchanges and dead-letter queue (RabbitMQ) and, with --event-log-…, the mesh's event log (any broker); idempotent",
      )
      .option("--event-log-max-age <age>", "keep events this long, e.g. 7d, 12h (default 7d)")
      .option(
        "--event-log-max-bytes <size>",
        "keep at most this much of the log, e.g. 1GiB, 500MB (default 1GiB)",
      ),
  ).action(action((cx, opts: MeshSetupOptions) => meshSetupCommand(cx, opts)));
  configure(
    mesh
      .command("teardown")
      .description("delete the vhost and everything in it")
      .option("--yes", "confirm the deletion"),
  ).action(action((cx, opts: TeardownOptions) => meshTeardownCommand(cx, opts)));

  configure(
    program
      .command("services")
      .description("list the services on the mesh, with their instances and waiting messages")
      .option("--json", "print JSON"),
  ).action(action((cx, opts: ServicesOptions) => servicesCommand(cx, opts)));

  configure(
    program
      .command("describe")
      .description("show a service's methods, parameters and auth/encryption flags")
      .argument("<service>", "service name")
      .option("--json", "print the description as JSON")
      .option("--ttl <ms>", "how long to wait for the answer (default 10000)"),
  ).action(
    action((cx, service: string, opts: DescribeOptions) => describeCommand(cx, service, opts)),
  );

  configure(
    program
      .command("stats")
      .description(
        "show a service instance's calls, errors, p50/p99 times, uptime and transport state",
      )
      .argument("<service>", "service name")
      .option("--json", "print the report as JSON")
      .option("--ttl <ms>", "how long to wait for the answer (default 10000)"),
  ).action(action((cx, service: string, opts: StatsOptions) => statsCommand(cx, service, opts)));

  for (const kind of ["call", "command"] as const) {
    configure(
      program
        .command(kind)
        .description(
          kind === "call"
            ? "call a method and print its result as JSON"
            : "send a command (fire and forget: no result)",
        )
        .argument("<service>", "service name")
        .argument("<method>", "method name")
        .argument("[params-json]", "parameters, a JSON object (default {})")
        .option("--context <json>", 'context, a JSON object, e.g. \'{"Authorization":"Bearer …"}\'')
        .option("--ttl <ms>", "time-to-live and timeout in milliseconds (default 10000)")
        .option("--encrypted", "encrypt end to end (needed by methods that require encryption)")
        .option("--trace-id <id>", "trace id to send (default: a fresh one)"),
    ).action(
      action((cx, service: string, method: string, params: string | undefined, opts: CallOptions) =>
        callCommand(cx, kind === "call" ? "request" : "command", service, method, params, opts),
      ),
    );
  }

  configure(
    program
      .command("codegen")
      .description(
        "write a TypeScript module of services' types and typed proxies, from their live descriptions",
      )
      .argument("<service...>", "service names (Python services too)")
      .option("--out <file>", "write to this file (default: standard output)")
      .option("--ttl <ms>", "how long to wait for each description (default 10000)"),
  ).action(
    action((cx, services: string[], opts: CodegenOptions) => codegenCommand(cx, services, opts)),
  );

  configure(
    program
      .command("publish")
      .description("publish an event to every service bound to its topic")
      .argument("<topic>", "topic, e.g. orders.created")
      .argument("<event-json>", "the event, any JSON value")
      .option("--context <json>", "context, a JSON object")
      .option("--trace-id <id>", "trace id to send (default: a fresh one)"),
  ).action(
    action((cx, topic: string, event: string, opts: PublishOptions) =>
      publishCommand(cx, topic, event, opts),
    ),
  );

  configure(
    program
      .command("listen")
      .description("print events matching a topic pattern as they arrive, until Ctrl-C")
      .argument("<pattern>", "topic pattern: '*' one word, '#' any number, e.g. 'orders.#'")
      .option("--json", "one JSON object per line")
      .option("--count <n>", "stop after n events")
      .option("--exchange <name>", "events exchange (default nuropb-events-exchange)"),
  ).action(action((cx, pattern: string, opts: ListenOptions) => listenCommand(cx, pattern, opts)));

  configure(
    program
      .command("events")
      .description(
        "print stored events matching a topic pattern from the mesh's event log, oldest first; --follow keeps printing new ones",
      )
      .argument("<pattern>", "topic pattern: '*' one word, '#' any number, e.g. 'orders.#'")
      .option("--since <when>", "from a duration ago (1h, 30m, 7d) or an ISO 8601 date")
      .option("--until <when>", "only events stored before it (same forms)")
      .option("--after <position>", "start just after this position (as --json prints it)")
      .option("--limit <n>", "print at most n events (default 100; unbounded with --follow)")
      .option("--follow", "then print new events as they are stored, until Ctrl-C")
      .option("--json", "one JSON object per line, with its timestamp and position")
      .option(
        "--secret-context-keys <keys>",
        "comma-separated context keys to leave out (credential-like keys always are)",
      ),
  ).action(action((cx, pattern: string, opts: EventsOptions) => eventsCommand(cx, pattern, opts)));

  configure(
    program
      .command("status")
      .description(
        "show the services, instances, states and leaders that runner participants report, redrawn as they change",
      )
      .option("--json", "one JSON view per line, at each change")
      .option("--wait <ms>", "listen this long, print the view once and exit"),
  ).action(action((cx, opts: StatusOptions) => statusCommand(cx, opts)));

  configure(
    program
      .command("run")
      .description(
        "run the services and clients of a runner module (defineRunner of @nuropb/runner) until SIGTERM / SIGINT, then drain",
      )
      .argument("<module>", "path of the module (./orders.runner.js) or a package name")
      .option("--health-port <port>", "serve /healthz and /readyz on this port")
      .option(
        "--drain-timeout <ms>",
        "how long the drain may take (default: the module's, else 10000)",
      )
      .addHelpText(
        "after",
        "\nWith --url (or NUROPB_URL) a module without a transport gets the one of the URL's scheme.\nExit codes: 0 drained, 1 start failed, 2 usage error, 3 the drain bound passed, 4 restarts ran out.",
      ),
  ).action(
    action((cx, module: string, opts: RunModuleOptions) => runModuleCommand(cx, module, opts)),
  );

  registerDlqCommands(program, configure, action);
  return program;
}

import type { Command } from "commander";
import { failureRecordOf, withoutFailureHeaders } from "@nuropb/core";
import {
  DEFAULT_MESH,
  NuropbNotDeliveredError,
  type DeadLetterEntry,
  type DeadLetterStore,
  type Frame,
  type Transport,
} from "@nuropb/protocol";
import { createAmqpDeadLetterStore } from "@nuropb/transport-amqp";
import { createNatsDeadLetterStore } from "@nuropb/transport-nats";
import { createRedisDeadLetterStore } from "@nuropb/transport-redis";
import { brokerUrl, positiveInteger, type BrokerUrl } from "../args.ts";
import { CliError, ExitCode, usageError } from "../errors.ts";
import { formatTable } from "../format.ts";
import { redactSecrets, scrub } from "../scrub.ts";
import { connectTimeoutOf, type CommandContext } from "./context.ts";

/** Options of `nuropb dlq list`. */
export interface DlqListOptions {
  /** `--json`: print JSON. */
  readonly json?: boolean;
  /** `--limit <n>`: at most this many (default 100). */
  readonly limit?: string;
}

/** Options of `nuropb dlq show`. */
export interface DlqShowOptions {
  readonly json?: boolean;
}

/** Options of `nuropb dlq requeue` and `nuropb dlq purge`. */
export interface DlqSelectOptions {
  /** `--all`: every dead letter (up to `--limit`), instead of one id. */
  readonly all?: boolean;
  readonly limit?: string;
}

/** How run.ts wraps a command's function as a commander action. */
type Action = <TArgs extends unknown[]>(
  fn: (cx: CommandContext, ...args: TArgs) => Promise<ExitCode>,
) => (...args: unknown[]) => Promise<void>;

/** Adds `nuropb dlq list|show|requeue|purge` to `program` (run.ts's command table). */
export function registerDlqCommands(
  program: Command,
  configure: (cmd: Command) => Command,
  action: Action,
): void {
  const dlq = configure(
    program
      .command("dlq")
      .description(
        "list, show, requeue or purge the mesh's dead letters, with their failure records (RabbitMQ, NATS, Redis)",
      ),
  );
  configure(
    dlq
      .command("list")
      .description("list the oldest dead letters: service, method, error, attempts, last failure")
      .option("--json", "print JSON")
      .option("--limit <n>", `at most this many (default ${String(DEFAULT_LIMIT)})`),
  ).action(action((cx, opts: DlqListOptions) => dlqListCommand(cx, opts)));
  configure(
    dlq
      .command("show")
      .description("show one dead letter: its failure record, headers and body")
      .argument("<id>", "the id `nuropb dlq list` shows")
      .option("--json", "print JSON"),
  ).action(action((cx, id: string, opts: DlqShowOptions) => dlqShowCommand(cx, id, opts)));
  for (const verb of ["requeue", "purge"] as const) {
    configure(
      dlq
        .command(verb)
        .description(
          verb === "requeue"
            ? "send dead letters back to their service's queue (then remove them): at least once"
            : "remove dead letters for good",
        )
        .argument("[id]", "the id `nuropb dlq list` shows")
        .option("--all", "every dead letter instead of one id")
        .option("--limit <n>", "with --all: at most this many"),
    ).action(
      action((cx, id: string | undefined, opts: DlqSelectOptions) =>
        verb === "requeue" ? dlqRequeueCommand(cx, id, opts) : dlqPurgeCommand(cx, id, opts),
      ),
    );
  }
}

/** Default `--limit`. */
const DEFAULT_LIMIT = 100;
/** Most dead letters read to find one by id, or for `--all`. */
const MAX_READ = 10_000;

/**
 * The dead-letter store of the broker at `broker` (its mesh): the dead-letter queue on RabbitMQ,
 * the dead-letter stream on NATS and on Redis.
 */
export function deadLetterStoreFor(broker: BrokerUrl, connectTimeoutMs: number): DeadLetterStore {
  const u = new URL(broker.url);
  switch (broker.kind) {
    case "amqp":
      return createAmqpDeadLetterStore({ url: broker.url });
    case "nats": {
      const user = decodeURIComponent(u.username);
      const pass = decodeURIComponent(u.password);
      const mesh = u.pathname.replace(/^\//, "");
      return createNatsDeadLetterStore({
        servers: `${u.protocol}//${u.host}`,
        mesh: mesh === "" ? DEFAULT_MESH : mesh,
        connectTimeoutMs,
        ...(pass !== ""
          ? { connectionOptions: { user, pass } }
          : user !== ""
            ? { connectionOptions: { token: user } }
            : {}),
      });
    }
    case "redis": {
      const mesh = u.searchParams.get("mesh");
      u.searchParams.delete("mesh");
      return createRedisDeadLetterStore({
        url: u.toString(),
        mesh: mesh === null || mesh === "" ? DEFAULT_MESH : mesh,
        connectTimeoutMs,
      });
    }
  }
}

/** `nuropb dlq list`: the oldest dead letters with their failure records. */
export async function dlqListCommand(cx: CommandContext, opts: DlqListOptions): Promise<ExitCode> {
  const limit = opts.limit === undefined ? DEFAULT_LIMIT : positiveInteger(opts.limit, "--limit");
  return withStore(cx, async (store, broker) => {
    const letters = await cx.output.spin(`reading dead letters of ${broker.vhost}`, () =>
      store.list(limit),
    );
    if (opts.json === true) {
      cx.output.data(`${JSON.stringify(letters.map(summaryOf), null, 2)}\n`);
      return ExitCode.ok;
    }
    if (letters.length === 0) {
      cx.output.note(`no dead letters on mesh ${broker.vhost}`);
      return ExitCode.ok;
    }
    const c = cx.output.out;
    const rows = letters.map((d) => {
      const s = summaryOf(d);
      return [
        s.id,
        s.service ?? "?",
        s.method ?? "",
        s.error ?? "",
        s.attempts === undefined ? "" : String(s.attempts),
        s.lastFailureAt ?? "",
        s.reason ?? "",
      ];
    });
    cx.output.data(
      formatTable(
        [
          { title: "id" },
          { title: "service", style: c.cyan },
          { title: "method" },
          { title: "error", style: c.red },
          { title: "attempts" },
          { title: "last failure", style: c.dim },
          { title: "reason" },
        ],
        rows,
        c,
      ),
    );
    return ExitCode.ok;
  });
}

/** `nuropb dlq show <id>`: one dead letter: its failure record, headers and body. */
export async function dlqShowCommand(
  cx: CommandContext,
  id: string,
  opts: DlqShowOptions,
): Promise<ExitCode> {
  return withStore(cx, async (store) => {
    const d = await findOne(store, id);
    const detail = dlqDetailOf(d);
    if (opts.json === true) {
      cx.output.data(`${JSON.stringify(detail, null, 2)}\n`);
      return ExitCode.ok;
    }
    const c = cx.output.out;
    const lines = [
      `${c.bold("id")}             ${detail.id}`,
      `${c.bold("service")}        ${detail.service ?? "?"}`,
      `${c.bold("reason")}         ${detail.reason ?? ""}`,
      `${c.bold("correlation id")} ${detail.correlationId}`,
    ];
    if (detail.error !== undefined) {
      lines.push(
        `${c.bold("method")}         ${detail.method ?? ""}`,
        `${c.bold("error")}          ${c.red(detail.error)}: ${detail.description ?? ""}`,
        `${c.bold("attempts")}       ${String(detail.attempts)} (${String(detail.redeliveries)} delayed redeliveries)`,
        `${c.bold("failed")}         ${detail.firstFailureAt ?? ""} … ${detail.lastFailureAt ?? ""}`,
      );
    }
    if (d.incomplete !== undefined)
      lines.push(`${c.bold("incomplete")}     ${c.red(d.incomplete)} (not requeued)`);
    lines.push(`${c.bold("headers")}        ${JSON.stringify(detail.headers)}`);
    lines.push(`${c.bold("body")}           ${JSON.stringify(detail.body)}`);
    cx.output.data(`${lines.join("\n")}\n`);
    return ExitCode.ok;
  });
}

/**
 * `nuropb dlq requeue <id>|--all`: sends each dead letter back to the queue of its service (its
 * failure record removed, so the service's failure policy starts again), then removes it from the
 * dead letters: at least once, never lost (a crash between the two leaves a copy in both). A
 * letter whose service has no queue (retired, renamed) or whose queue refuses it stays.
 */
export async function dlqRequeueCommand(
  cx: CommandContext,
  id: string | undefined,
  opts: DlqSelectOptions,
): Promise<ExitCode> {
  if ((id === undefined) === (opts.all !== true))
    throw usageError("give one dead letter id, or --all");
  const limit =
    id !== undefined || opts.limit === undefined
      ? MAX_READ
      : positiveInteger(opts.limit, "--limit");
  return withStore(cx, async (store, broker) => {
    const transport = cx.createTransport(broker.url, { connectTimeoutMs: connectTimeoutOf(cx) });
    try {
      await cx.output.spin(`connecting to ${broker.shown}`, () => transport.connect());
      const { requeued, kept } = await requeueDeadLetters(
        store,
        transport,
        id === undefined ? { all: true, limit } : { id },
        (line) => cx.output.note(line),
      );
      cx.output.data(`${String(requeued)} dead letter(s) requeued\n`);
      return kept === 0 ? ExitCode.ok : ExitCode.failed;
    } finally {
      await transport.close().catch(() => undefined);
    }
  });
}

/**
 * Requeues dead letters (one by id, or all up to `limit`): a mandatory send to the service's
 * queue (`NuropbNotDeliveredError` when it has none), and only once the broker holds the copy,
 * the letter removed. With a store that has `take` (RabbitMQ), `--all` is one pass (get, send,
 * remove); else the letters are listed, then each sent and removed by its id. Resolves with how
 * many were requeued and how many were kept (no service known, or the broker did not take it).
 * @throws the transport's error other than not-delivered (the letter stays, and the rest).
 */
export async function requeueDeadLetters(
  store: DeadLetterStore,
  transport: Transport,
  which: { readonly id: string } | { readonly all: true; readonly limit: number },
  note: (line: string) => void,
): Promise<{ requeued: number; kept: number }> {
  let kept = 0;
  const send = async (d: DeadLetterEntry): Promise<boolean> => {
    if (d.service === undefined) {
      note(`${d.id}: its service is not known; left in the dead letters`);
      kept++;
      return false;
    }
    if (d.incomplete !== undefined) {
      note(`${d.id}: not requeued, ${d.incomplete}; left in the dead letters`);
      kept++;
      return false;
    }
    try {
      await transport.send({ kind: "rpc", service: d.service }, requeuedFrame(d.frame));
    } catch (err) {
      if (!(err instanceof NuropbNotDeliveredError)) throw err;
      note(`${d.id}: service ${d.service} has no queue to take it; left in the dead letters`);
      kept++;
      return false;
    }
    note(`${d.id}: requeued to ${d.service}`);
    return true;
  };
  if ("all" in which && store.take !== undefined) {
    const requeued = await store.take(which.limit, send);
    return { requeued, kept };
  }
  const letters = "id" in which ? [await findOne(store, which.id)] : await store.list(which.limit);
  let requeued = 0;
  for (const d of letters) {
    if (!(await send(d))) continue;
    requeued++;
    if ((await store.remove([d.id])) === 0)
      note(`${d.id}: it had left the dead letters meanwhile (requeued all the same)`);
  }
  return { requeued, kept };
}

/** `nuropb dlq purge <id>|--all`: removes dead letters for good. */
export async function dlqPurgeCommand(
  cx: CommandContext,
  id: string | undefined,
  opts: DlqSelectOptions,
): Promise<ExitCode> {
  return withStore(cx, async (store) => {
    const letters = await select(store, id, opts);
    const removed = await store.remove(letters.map((d) => d.id));
    cx.output.data(`${String(removed)} dead letter(s) purged\n`);
    return ExitCode.ok;
  });
}

/** What `list` prints of a dead letter: where it came from and its failure record, if any. */
export interface Summary {
  readonly id: string;
  readonly service: string | undefined;
  readonly reason: string | undefined;
  readonly correlationId: string;
  readonly type: string | undefined;
  readonly method: string | undefined;
  readonly error: string | undefined;
  readonly description: string | undefined;
  readonly attempts: number | undefined;
  readonly redeliveries: number | undefined;
  readonly firstFailureAt: string | undefined;
  readonly lastFailureAt: string | undefined;
}

function summaryOf(d: DeadLetterEntry): Summary {
  const r = failureRecordOf(d.frame.headers);
  const type = d.frame.headers.nuropb_type;
  return {
    id: d.id,
    service: d.service ?? (r?.service || undefined),
    reason: d.reason,
    correlationId: d.frame.correlationId,
    type: typeof type === "string" ? type : undefined,
    method: r?.method,
    error: r?.error,
    description: r?.description,
    attempts: r?.attempts,
    redeliveries: r?.redeliveries,
    firstFailureAt: r?.firstFailureAt,
    lastFailureAt: r?.lastFailureAt,
  };
}

/**
 * What `nuropb dlq show` prints of a dead letter: its summary, headers and body, with the
 * credentials of its context (and any credential-like header) redacted.
 */
export function dlqDetailOf(d: DeadLetterEntry): Summary & {
  readonly incomplete?: string;
  readonly headers: unknown;
  readonly body: unknown;
} {
  return {
    ...summaryOf(d),
    ...(d.incomplete === undefined ? {} : { incomplete: d.incomplete }),
    headers: redactSecrets(d.frame.headers),
    body: bodyOf(d.frame),
  };
}

/**
 * The body as JSON when it is (its `context` redacted: it carries the caller's credentials), else
 * a note of its size (an encrypted body stays unread).
 */
function bodyOf(frame: Frame): unknown {
  if (frame.headers.encrypted === "yes")
    return `(encrypted, ${String(frame.body.byteLength)} bytes)`;
  const text = Buffer.from(frame.body).toString("utf8");
  let body: unknown;
  try {
    body = JSON.parse(text) as unknown;
  } catch {
    return `(${String(frame.body.byteLength)} bytes, not JSON)`;
  }
  if (typeof body !== "object" || body === null || !("context" in body)) return body;
  return { ...body, context: redactSecrets(body.context) };
}

/** The frame sent back to its service: without the failure record or a ttl. */
function requeuedFrame(frame: Frame): Frame {
  return {
    headers: withoutFailureHeaders(frame.headers),
    body: frame.body,
    correlationId: frame.correlationId,
    ...(frame.replyTo === undefined ? {} : { replyTo: frame.replyTo }),
  };
}

async function findOne(store: DeadLetterStore, id: string): Promise<DeadLetterEntry> {
  const found = (await store.list(MAX_READ)).find((d) => d.id === id);
  if (found === undefined)
    throw new CliError(`no dead letter with id ${id}`, ExitCode.usage, {
      hint: "`nuropb dlq list` shows the ids",
    });
  return found;
}

/** One dead letter by id, or `--all` (up to `--limit`). */
async function select(
  store: DeadLetterStore,
  id: string | undefined,
  opts: DlqSelectOptions,
): Promise<DeadLetterEntry[]> {
  if ((id === undefined) === (opts.all !== true))
    throw usageError("give one dead letter id, or --all");
  if (id !== undefined) return [await findOne(store, id)];
  const limit = opts.limit === undefined ? MAX_READ : positiveInteger(opts.limit, "--limit");
  return store.list(limit);
}

/** Runs `work` with the broker's dead-letter store, closed afterwards; broker errors are exit 4. */
async function withStore(
  cx: CommandContext,
  work: (store: DeadLetterStore, broker: BrokerUrl) => Promise<ExitCode>,
): Promise<ExitCode> {
  const broker = cx.useBroker(brokerUrl(cx.globals.url, cx.io.env));
  const store = deadLetterStoreFor(broker, connectTimeoutOf(cx));
  try {
    return await work(store, broker);
  } catch (err) {
    if (err instanceof CliError || err instanceof TypeError) throw err;
    throw new CliError(
      `dead letters of ${broker.shown}: ${scrub((err as Error)?.message ?? String(err), broker)}`,
      ExitCode.transport,
      { cause: err },
    );
  } finally {
    await store.close();
  }
}

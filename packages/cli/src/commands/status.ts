import { DEFAULT_EVENTS_EXCHANGE, newId } from "@nuropb/protocol";
import { STATUS_TOPIC, createServicesView, type ServicesView } from "@nuropb/runner";
import amqp from "amqplib";
import type { ChannelModel, ConsumeMessage } from "amqplib";
import { brokerUrl, milliseconds } from "../args.ts";
import { CliError, ExitCode } from "../errors.ts";
import { formatTable } from "../format.ts";
import type { Colors } from "../io.ts";
import { scrub } from "../scrub.ts";
import { connectTimeoutOf, type CommandContext } from "./context.ts";
import { toEvent, withTimeout } from "./listen.ts";

/** Options of `nuropb status`. */
export interface StatusOptions {
  /** `--json`: one JSON view per line, at each change. */
  readonly json?: boolean;
  /** `--wait <ms>`: listen this long, print the view once and exit. */
  readonly wait?: string;
}

/** How often silent instances are looked for, in ms. */
const PRUNE_EVERY_MS = 1_000;

/**
 * `nuropb status`: the live view of what runner participants report on `nuropb.status` —
 * services, instances, their state, the leader, last seen — redrawn in place on a terminal at each
 * change until Ctrl-C (`--json`: a line per change; `--wait`: once, after listening that long).
 * Like `listen`, it binds a queue of its own (exclusive, auto-deleted) to the events exchange.
 */
export async function statusCommand(cx: CommandContext, opts: StatusOptions): Promise<ExitCode> {
  const waitMs = opts.wait === undefined ? undefined : milliseconds(opts.wait, "--wait");
  const connectTimeoutMs = connectTimeoutOf(cx);
  const broker = cx.useBroker(brokerUrl(cx.globals.url, cx.io.env, { amqpFor: "`nuropb status`" }));
  const { output, io } = cx;
  const queue = `nuropb-cli-status-${newId().slice(0, 12)}`;
  let conn: ChannelModel;
  try {
    conn = await output.spin(`connecting to ${broker.shown}`, () =>
      withTimeout(
        amqp.connect(broker.url, {
          timeout: connectTimeoutMs,
          clientProperties: { connection_name: queue, product: "nuropb-cli" },
        }),
        connectTimeoutMs,
      ),
    );
  } catch (err) {
    throw new CliError(
      `cannot connect to ${broker.shown}: ${scrub((err as Error)?.message ?? String(err), broker)}`,
      ExitCode.transport,
      {
        cause: err,
        hint: "is RabbitMQ running there? check the URL, the credentials and the vhost",
      },
    );
  }
  const view = createServicesView();
  const live = waitMs === undefined && opts.json !== true && io.stdoutIsTTY === true;
  let drawnLines = 0;
  const show = (): void => {
    const v = view.view();
    if (opts.json === true) return output.data(`${JSON.stringify(v)}\n`);
    const text = formatServicesView(v, output.out, Date.now());
    // On a terminal the view is redrawn where it was: up over the last drawing, clear to the end.
    if (live && drawnLines > 0) output.data(`\x1b[${String(drawnLines)}F\x1b[J`);
    output.data(text);
    drawnLines = text.split("\n").length - 1;
  };
  let stopping = false;
  const timers: ReturnType<typeof setTimeout>[] = [];
  try {
    conn.on("error", () => undefined);
    const ch = await conn.createChannel();
    ch.on("error", () => undefined);
    const done = new Promise<ExitCode>((resolve, reject) => {
      const stop = (): void => {
        stopping = true;
        resolve(ExitCode.ok);
      };
      const onMessage = (msg: ConsumeMessage | null): void => {
        if (stopping) return;
        if (msg === null) return reject(new Error("the broker cancelled the subscription"));
        const event = toEvent(msg);
        if (typeof event !== "string" && view.apply(event.event) && waitMs === undefined) show();
      };
      conn.on("close", (err?: Error) => {
        if (!stopping) reject(err ?? new Error("the connection closed"));
      });
      if (io.signal?.aborted === true) stop();
      else io.signal?.addEventListener("abort", stop, { once: true });
      timers.push(
        setInterval(() => {
          if (view.prune() && waitMs === undefined) show();
        }, PRUNE_EVERY_MS),
      );
      void (async () => {
        await ch.assertQueue(queue, { exclusive: true, autoDelete: true, durable: false });
        await ch.bindQueue(queue, DEFAULT_EVENTS_EXCHANGE, STATUS_TOPIC);
        await ch.consume(queue, onMessage, { noAck: true, exclusive: true });
        if (waitMs !== undefined) timers.push(setTimeout(stop, waitMs));
        else {
          output.note(
            output.err.dim(`watching ${STATUS_TOPIC} on mesh ${broker.vhost}, Ctrl-C to stop`),
          );
          if (opts.json !== true) show();
        }
      })().catch(reject);
    });
    const code = await done.catch((err: unknown) => {
      throw new CliError(
        `watching failed: ${scrub((err as Error)?.message ?? String(err), broker)}`,
        ExitCode.transport,
        { cause: err },
      );
    });
    if (waitMs !== undefined) show();
    return code;
  } finally {
    stopping = true;
    for (const t of timers) clearTimeout(t);
    await conn.close().catch(() => undefined);
  }
}

/**
 * The view as a table: one row per instance, its service, state, whether it leads and how long
 * ago it was last heard from; clients counted below.
 */
export function formatServicesView(v: ServicesView, colors: Colors, now: number): string {
  const rows: string[][] = [];
  for (const s of v.services) {
    for (const i of s.instances) {
      rows.push([
        s.name,
        i.instanceId,
        i.state,
        i.leader ? "yes" : "",
        `${String(Math.max(0, Math.round((now - i.lastSeen) / 1000)))}s ago`,
      ]);
    }
  }
  if (rows.length === 0 && v.clients.length === 0)
    return `${colors.dim("no participants reporting")}\n`;
  const table =
    rows.length === 0
      ? ""
      : formatTable(
          [
            { title: "service", style: (t) => colors.cyan(t) },
            { title: "instance" },
            { title: "state", style: (t) => (t.startsWith("stopping") ? colors.yellow(t) : t) },
            { title: "leader", style: (t) => colors.green(t) },
            { title: "seen", style: (t) => colors.dim(t) },
          ],
          rows,
          colors,
        );
  const clients =
    v.clients.length === 0 ? "" : `${colors.dim(`${String(v.clients.length)} client(s)`)}\n`;
  return `${table}${clients}`;
}

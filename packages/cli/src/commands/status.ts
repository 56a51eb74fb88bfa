import { STATUS_TOPIC, type ServicesView, type ServicesWatch } from "@nuropb/core";
import { brokerUrl, milliseconds } from "../args.ts";
import { CliError, ExitCode } from "../errors.ts";
import { formatTable } from "../format.ts";
import type { Colors } from "../io.ts";
import { scrub } from "../scrub.ts";
import { openSession } from "../session.ts";
import { connectTimeoutOf, type CommandContext } from "./context.ts";

/** Options of `nuropb status`. */
export interface StatusOptions {
  /** `--json`: one JSON view per line, at each change. */
  readonly json?: boolean;
  /** `--wait <ms>`: listen this long, print the view once and exit. */
  readonly wait?: string;
}

/** How often silent instances are looked for, in ms. */
const PRUNE_EVERY_MS = 1_000;
/** How often the view on a terminal is redrawn without a change (its "seen" ages), in ms. */
const REDRAW_EVERY_MS = 1_000;

/**
 * `nuropb status`: the live view of what runner participants report on `nuropb.status` —
 * services, instances, their state, the leader, last seen — redrawn in place on a terminal at each
 * change and every second (so "seen" ages: an instance that crashed shows how long it has been
 * silent until it is dropped) until Ctrl-C (`--json`: a line per change; `--wait`: once, after
 * listening that long).
 * It works on every broker the CLI reaches (RabbitMQ, NATS, Redis): a client's `watchServices()`,
 * which reads a transient queue of its own, gone when the command ends.
 */
export async function statusCommand(cx: CommandContext, opts: StatusOptions): Promise<ExitCode> {
  const waitMs = opts.wait === undefined ? undefined : milliseconds(opts.wait, "--wait");
  const connectTimeoutMs = connectTimeoutOf(cx);
  const broker = cx.useBroker(brokerUrl(cx.globals.url, cx.io.env));
  const { output, io } = cx;
  const session = await output.spin(`connecting to ${broker.shown}`, () =>
    openSession(broker, { connectTimeoutMs }, cx.createTransport),
  );
  const live = waitMs === undefined && opts.json !== true && io.stdoutIsTTY === true;
  let drawnLines = 0;
  let watch: ServicesWatch | undefined;
  const show = (v: ServicesView): void => {
    if (opts.json === true) return output.data(`${JSON.stringify(v)}\n`);
    const text = formatServicesView(v, output.out, Date.now());
    // On a terminal the view is redrawn where it was: up over the last drawing, clear to the end.
    if (live && drawnLines > 0) output.data(`\x1b[${String(drawnLines)}F\x1b[J`);
    output.data(text);
    drawnLines = text.split("\n").length - 1;
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  let redraw: ReturnType<typeof setInterval> | undefined;
  let onAbort: (() => void) | undefined;
  try {
    try {
      watch = await session.client.watchServices({ pruneEveryMs: PRUNE_EVERY_MS });
    } catch (err) {
      throw new CliError(
        `watching failed: ${scrub((err as Error)?.message ?? String(err), broker)}`,
        ExitCode.transport,
        { cause: err },
      );
    }
    const w = watch;
    const stopped = new Promise<undefined>((resolve) => {
      const stop = (): void => resolve(undefined);
      onAbort = stop;
      if (io.signal?.aborted === true) stop();
      else io.signal?.addEventListener("abort", stop, { once: true });
      if (waitMs !== undefined) timer = setTimeout(stop, waitMs);
    });
    // The transport closing for good (it gave up reconnecting) ends the watch with an error.
    const lost = session.client.closed().then((err) => err ?? new Error("the connection closed"));
    if (waitMs === undefined) {
      output.note(
        output.err.dim(`watching ${STATUS_TOPIC} on mesh ${broker.vhost}, Ctrl-C to stop`),
      );
      if (opts.json !== true) show(w.view());
      void (async () => {
        try {
          for await (const v of w.updates()) show(v);
        } catch {
          // The transport closed for good: `lost` below reports it.
        }
      })();
      if (live) redraw = setInterval(() => show(w.view()), REDRAW_EVERY_MS);
    }
    const failure = await Promise.race([stopped, lost]);
    if (failure !== undefined) {
      throw new CliError(`watching failed: ${scrub(failure.message, broker)}`, ExitCode.transport, {
        cause: failure,
      });
    }
    if (waitMs !== undefined) show(w.view());
    return ExitCode.ok;
  } finally {
    clearTimeout(timer);
    clearInterval(redraw);
    if (onAbort !== undefined) io.signal?.removeEventListener("abort", onAbort);
    await watch?.close().catch(() => undefined);
    await session.close();
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

import {
  DEFAULT_EVENTS_EXCHANGE,
  ENCRYPTED_YES,
  Header,
  decodeFrame,
  newId,
} from "@nuropb/protocol";
import amqp from "amqplib";
import type { Channel, ChannelModel, ConsumeMessage } from "amqplib";
import { brokerUrl, positiveInteger, topicPattern } from "../args.ts";
import { CliError, ExitCode } from "../errors.ts";
import { formatEvent, formatEventJson, type ReceivedEvent } from "../format.ts";
import { scrub } from "../scrub.ts";
import { connectTimeoutOf, type CommandContext } from "./context.ts";

/** Options of `nuropb listen`. */
export interface ListenOptions {
  /** `--json`: one JSON object per event and line. */
  readonly json?: boolean;
  /** Stop after this many events (as typed). */
  readonly count?: string;
  /** Events exchange name. */
  readonly exchange?: string;
}

/**
 * `nuropb listen <pattern>`: prints the events matching a topic pattern until interrupted (or
 * `--count` events). It binds its own queue to the events exchange — exclusive and auto-deleted,
 * so nothing stays behind — and takes copies without disturbing the services' own queues.
 */
export async function listenCommand(
  cx: CommandContext,
  pattern: string,
  opts: ListenOptions,
): Promise<ExitCode> {
  topicPattern(pattern);
  const limit = opts.count === undefined ? Infinity : positiveInteger(opts.count, "--count");
  const connectTimeoutMs = connectTimeoutOf(cx);
  const exchange = opts.exchange ?? DEFAULT_EVENTS_EXCHANGE;
  const broker = cx.useBroker(brokerUrl(cx.globals.url, cx.io.env, { amqpFor: "`nuropb listen`" }));
  const { output, io } = cx;
  const fail = (what: string, err: unknown, hint?: string): CliError =>
    new CliError(
      `${what}: ${scrub((err as Error)?.message ?? String(err), broker)}`,
      ExitCode.transport,
      { cause: err, ...(hint !== undefined ? { hint } : {}) },
    );

  const queue = `nuropb-cli-listen-${newId().slice(0, 12)}`;
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
    throw fail(
      `cannot connect to ${broker.shown}`,
      err,
      "is RabbitMQ running there? check the URL, the credentials and the vhost",
    );
  }

  let received = 0;
  let stopping = false;
  let channel: Channel | undefined;
  let consumerTag: string | undefined;
  try {
    // Errors arrive as events too; the awaited calls below reject with them.
    conn.on("error", () => undefined);
    const ch = await conn.createChannel();
    channel = ch;
    ch.on("error", () => undefined);
    const done = new Promise<ExitCode>((resolve, reject) => {
      const stop = (): void => {
        stopping = true;
        resolve(ExitCode.ok);
      };
      const onMessage = (msg: ConsumeMessage | null): void => {
        // One socket read can hold many messages, and more arrive until the consumer is cancelled:
        // once done (the count reached or Ctrl-C), print nothing more.
        if (stopping || received >= limit) return;
        if (msg === null) {
          reject(new Error("the broker cancelled the subscription"));
          return;
        }
        const event = toEvent(msg);
        if (typeof event === "string") {
          output.note(output.err.yellow(`skipped a message: ${event}`));
          return;
        }
        received += 1;
        output.data(opts.json === true ? formatEventJson(event) : formatEvent(event, output.out));
        if (received >= limit) stop();
      };
      conn.on("close", (err?: Error) => {
        if (!stopping) reject(err ?? new Error("the connection closed"));
      });
      if (io.signal?.aborted === true) stop();
      else io.signal?.addEventListener("abort", stop, { once: true });
      void (async () => {
        await ch.assertQueue(queue, { exclusive: true, autoDelete: true, durable: false });
        await ch.bindQueue(queue, exchange, pattern);
        ({ consumerTag } = await ch.consume(queue, onMessage, { noAck: true, exclusive: true }));
        output.note(
          output.err.dim(
            `listening for '${pattern}' on mesh ${broker.vhost} (queue ${queue}), Ctrl-C to stop`,
          ),
        );
      })().catch((err: unknown) =>
        reject(
          /NOT_FOUND - no exchange/.test(String((err as Error)?.message))
            ? new CliError(
                `there is no events exchange '${exchange}' on mesh ${broker.vhost}`,
                ExitCode.transport,
                { hint: "`nuropb mesh setup` creates it" },
              )
            : err,
        ),
      );
    });
    const code = await done.catch((err: unknown) => {
      if (err instanceof CliError) throw err;
      throw fail("listening failed", err);
    });
    return code;
  } finally {
    stopping = true;
    if (consumerTag !== undefined && channel !== undefined) {
      await channel.cancel(consumerTag).catch(() => undefined);
    }
    await conn.close().catch(() => undefined);
    if (opts.json !== true && received > 0) output.note(output.err.dim(`${received} event(s)`));
  }
}

/** The event in a message, or why it is not one. */
export function toEvent(msg: ConsumeMessage): ReceivedEvent | string {
  const headers = (msg.properties.headers ?? {}) as Record<string, unknown>;
  if (headers[Header.encrypted] === ENCRYPTED_YES) return "an encrypted body cannot be shown";
  try {
    const decoded = decodeFrame({
      headers,
      body: msg.content,
      correlationId:
        typeof msg.properties.correlationId === "string" ? msg.properties.correlationId : undefined,
    });
    if (decoded.type !== "event") return `not an event (${decoded.type})`;
    const p = decoded.payload;
    return {
      topic: p.topic,
      event: p.event,
      context: p.context,
      traceId: decoded.traceId,
      target: p.target,
      receivedAt: new Date(),
    };
  } catch (err) {
    return (err as Error).message;
  }
}

/** `p`, or a rejection after `ms` (a connection made later is closed). */
export function withTimeout<T extends { close(): Promise<void> }>(
  p: Promise<T>,
  ms: number,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let late = false;
    const timer = setTimeout(() => {
      late = true;
      reject(new Error(`no connection within ${ms} ms`));
    }, ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        if (late) void v.close().catch(() => undefined);
        else resolve(v);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}

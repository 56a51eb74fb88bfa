import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  connect,
  createInbox,
  headers,
} from "nats";
import type {
  ConsumerMessages,
  JetStreamManager,
  JsMsg,
  Msg,
  NatsConnection,
  NatsError,
} from "nats";
import { runTag } from "../rr.ts";
import { PendingCalls } from "./pending.ts";

/** What the raw JetStream echo does, for the suite's notes. */
export const RAW_NATS_JETSTREAM_SETTINGS =
  "requests published into a work-queue stream (file storage), each confirmed by its PubAck on one wildcard ack subscription (not js.publish()); server = durable pull consumer (explicit acks, max_ack_pending 64) read with consume({ max_messages: 64 }) and a callback that JSON.parse + JSON.stringify, publishes the reply on core NATS to the client's inbox, then acks; correlation id and reply inbox in headers";

/** A raw JetStream echo: one client, one server, each on its own connection. */
export interface RawNatsJetStreamEcho {
  /** Publish into the stream (confirmed by its PubAck), resolve with the reply from the inbox. */
  call(params: unknown): Promise<unknown>;
  /** Stops the consumer, deletes the stream and closes both connections. */
  close(): Promise<void>;
}

/** How many deliveries the server holds unacknowledged, and pulls at a time (nuropb's prefetch). */
const WINDOW = 64;

/** A PubAck body: `{ stream, seq }`, or an error from the stream. */
interface PubAck {
  readonly error?: { readonly code?: number; readonly description?: string };
}

/** Starts the stream, its consumer, the server and the client. */
export async function startRawNatsJetStreamEcho(servers: string): Promise<RawNatsJetStreamEcho> {
  const tag = runTag();
  const stream = `bench_rawjs_${tag}`;
  const subject = `bench.rawjs.echo.${tag}`;
  const durable = "echo";
  const replies = new PendingCalls("raw JetStream echo");
  const acks = new PendingCalls("raw JetStream PubAck");
  let server: NatsConnection | undefined;
  let jsm: JetStreamManager | undefined;
  let client: NatsConnection | undefined;
  let messages: ConsumerMessages | undefined;
  let streamMade = false;
  let closed = false;

  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    const err = new Error("raw JetStream echo closed");
    acks.rejectAll(err);
    replies.rejectAll(err);
    await messages?.close().catch(() => undefined);
    await client?.close().catch(() => undefined);
    if (streamMade) await jsm?.streams.delete(stream).catch(() => undefined);
    await server?.close().catch(() => undefined);
  };

  try {
    // --- server: the stream, its durable pull consumer, and the echo handler
    const srv = await connect({ servers, name: "bench-rawjs-server" });
    server = srv;
    const manager = await srv.jetstreamManager();
    jsm = manager;
    await manager.streams.add({
      name: stream,
      subjects: [subject],
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
    });
    streamMade = true;
    await manager.consumers.add(stream, {
      durable_name: durable,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      max_ack_pending: WINDOW,
    });
    const consumer = await srv.jetstream().consumers.get(stream, durable);
    messages = await consumer.consume({
      max_messages: WINDOW,
      callback: (m: JsMsg) => {
        const cid = m.headers?.get("cid") ?? "";
        const replyTo = m.headers?.get("reply-to") ?? "";
        if (cid === "" || replyTo === "") {
          m.term();
          return;
        }
        let out: Buffer;
        try {
          out = Buffer.from(JSON.stringify(JSON.parse(m.string())));
        } catch {
          m.term();
          return;
        }
        const h = headers();
        h.set("cid", cid);
        srv.publish(replyTo, out, { headers: h });
        m.ack();
      },
    });

    // --- client: one reply inbox, and one wildcard subscription for the PubAcks (matched by id)
    const cli = await connect({ servers, name: "bench-rawjs-client" });
    client = cli;
    const inbox = createInbox();
    cli.subscribe(inbox, {
      callback: (err: NatsError | null, msg: Msg) => {
        if (err !== null) return;
        const id = msg.headers?.get("cid");
        if (id !== undefined) replies.resolve(id, JSON.parse(msg.string()));
      },
    });
    const ackPrefix = createInbox();
    cli.subscribe(`${ackPrefix}.*`, {
      callback: (err: NatsError | null, msg: Msg) => {
        if (err !== null) return;
        const id = msg.subject.slice(ackPrefix.length + 1);
        const status = msg.headers?.code ?? 0;
        if (status === 503) {
          acks.reject(id, new Error("no responders: no stream captures the subject"));
          return;
        }
        if (status >= 400) {
          acks.reject(id, new Error(msg.headers?.description ?? `status ${String(status)}`));
          return;
        }
        let ack: PubAck;
        try {
          ack = JSON.parse(msg.string()) as PubAck;
        } catch (parseErr) {
          acks.reject(id, parseErr as Error);
          return;
        }
        if (ack.error !== undefined) {
          const code = String(ack.error.code ?? "?");
          acks.reject(id, new Error(`PubAck error ${code}: ${ack.error.description ?? ""}`));
          return;
        }
        acks.resolve(id, undefined);
      },
    });
    await cli.flush();

    return {
      async call(params) {
        const reply = replies.open();
        // Handled here too: it may time out while the PubAck is still awaited.
        reply.promise.catch(() => undefined);
        const ack = acks.open();
        const h = headers();
        h.set("cid", reply.id);
        h.set("reply-to", inbox);
        try {
          cli.publish(subject, Buffer.from(JSON.stringify(params)), {
            reply: `${ackPrefix}.${ack.id}`,
            headers: h,
          });
          await ack.promise;
        } catch (err) {
          // Not stored (or not confirmed): the call fails, its reply is no longer awaited.
          acks.reject(ack.id, err as Error); // when the publish itself threw
          ack.promise.catch(() => undefined);
          replies.reject(reply.id, err as Error);
          throw err;
        }
        return reply.promise;
      },
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

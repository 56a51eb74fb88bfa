import { connect, createInbox, headers } from "nats";
import type { Msg, NatsConnection, NatsError } from "nats";
import { runTag } from "../rr.ts";
import { PendingCalls } from "./pending.ts";

/** What the raw NATS echo does, for the suite's notes. */
export const RAW_NATS_SETTINGS =
  "nats: core NATS (no JetStream), server = one queue-group subscription (callback) that JSON.parse + JSON.stringify and msg.respond(); reply-sub client = one inbox subscription per client, correlation id in a header";

/** A raw NATS echo server and two clients (reply subscription; `nc.request()`). */
export interface RawNatsEcho {
  /** Publish with a fixed reply subject per client and a correlation id header. */
  callReplySub(params: unknown): Promise<unknown>;
  /** `nc.request()` (the client's muxed inbox). */
  callRequest(params: unknown): Promise<unknown>;
  close(): Promise<void>;
}

/** Starts the server and the two clients, each on its own connection. */
export async function startRawNatsEcho(servers: string): Promise<RawNatsEcho> {
  const subject = `bench.raw.echo.${runTag()}`;
  const conns: NatsConnection[] = [];
  const pending = new PendingCalls("raw NATS echo");
  const close = async (): Promise<void> => {
    pending.rejectAll(new Error("raw NATS echo closed"));
    for (const c of conns.reverse()) await c.close().catch(() => undefined);
  };
  try {
    const server = await connect({ servers, name: "bench-raw-server" });
    conns.push(server);
    server.subscribe(subject, {
      queue: "echo",
      callback: (err: NatsError | null, msg: Msg) => {
        if (err !== null) return;
        const out = Buffer.from(JSON.stringify(JSON.parse(msg.string())));
        if (msg.headers !== undefined) msg.respond(out, { headers: msg.headers });
        else msg.respond(out);
      },
    });
    await server.flush();

    const sub = await connect({ servers, name: "bench-raw-client-sub" });
    conns.push(sub);
    const inbox = createInbox();
    sub.subscribe(inbox, {
      callback: (err: NatsError | null, msg: Msg) => {
        if (err !== null) return;
        const id = msg.headers?.get("cid");
        if (id !== undefined) pending.resolve(id, JSON.parse(msg.string()));
      },
    });
    await sub.flush();

    const req = await connect({ servers, name: "bench-raw-client-request" });
    conns.push(req);

    return {
      callReplySub(params) {
        const { id, promise } = pending.open();
        const h = headers();
        h.set("cid", id);
        sub.publish(subject, Buffer.from(JSON.stringify(params)), { reply: inbox, headers: h });
        return promise;
      },
      async callRequest(params) {
        const m = await req.request(subject, Buffer.from(JSON.stringify(params)), {
          timeout: 10_000,
        });
        return JSON.parse(m.string()) as unknown;
      },
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

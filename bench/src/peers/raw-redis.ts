import { Redis } from "ioredis";
import { runTag } from "../rr.ts";
import { PendingCalls } from "./pending.ts";
import { receiveReplies } from "./redis-replies.ts";

/** What the raw Redis echo does, for the suite's notes. */
export const RAW_REDIS_SETTINGS =
  "ioredis lists: client RPUSH {id, replyTo, params} to the request list, server BLMPOP (COUNT 64) on a dedicated connection, JSON.parse + JSON.stringify, RPUSH {id, result} to the client's reply list (pipelined per batch), client BLMPOP (COUNT 64) on its own dedicated connection";

/** A raw ioredis list-based echo server and one client. */
export interface RawRedisEcho {
  call(params: unknown): Promise<unknown>;
  close(): Promise<void>;
}

interface Request {
  readonly id: string;
  readonly replyTo: string;
  readonly params: unknown;
}

/** Starts the server loop and the client's reply loop, each blocking on its own connection. */
export async function startRawRedisEcho(url: string): Promise<RawRedisEcho> {
  const tag = runTag();
  const requestList = `bench:raw:rq:${tag}`;
  const replyList = `bench:raw:reply:${tag}`;
  const conns: Redis[] = [];
  const connection = (): Redis => {
    const r = new Redis(url, { maxRetriesPerRequest: 1, lazyConnect: false });
    conns.push(r);
    return r;
  };
  let stopping = false;
  let failure: Error | undefined;
  const pending = new PendingCalls("raw Redis echo");
  const loops: Promise<void>[] = [];
  const close = async (): Promise<void> => {
    stopping = true;
    pending.rejectAll(new Error("raw Redis echo closed"));
    for (const c of conns) c.disconnect();
    await Promise.allSettled(loops);
  };
  const fail = (err: unknown): void => {
    failure = err instanceof Error ? err : new Error(String(err));
    pending.rejectAll(failure);
  };
  // BLMPOP reply: [key, [element, ...]] or null on timeout.
  const popBatch = async (r: Redis, key: string): Promise<string[]> => {
    const res = (await r.blmpop(1, 1, key, "LEFT", "COUNT", 64)) as [string, string[]] | null;
    return res === null ? [] : res[1];
  };
  try {
    const serverBlocking = connection();
    const serverPush = connection();
    const clientBlocking = connection();
    const clientPush = connection();
    await Promise.all(conns.map((c) => c.ping()));
    loops.push(
      (async () => {
        while (!stopping) {
          let batch: string[];
          try {
            batch = await popBatch(serverBlocking, requestList);
          } catch (err) {
            if (!stopping) fail(err);
            return;
          }
          if (batch.length === 0) continue;
          const pipe = serverPush.pipeline();
          for (const text of batch) {
            const req = JSON.parse(text) as Request;
            pipe.rpush(req.replyTo, JSON.stringify({ id: req.id, result: req.params }));
          }
          pipe.exec().catch(fail);
        }
      })().catch(fail),
      receiveReplies(clientBlocking, replyList, pending, {
        blockSec: 1,
        stopping: () => stopping,
        fail,
      }).catch(fail),
    );
    return {
      call(params) {
        if (failure !== undefined) return Promise.reject(failure);
        const { id, promise } = pending.open();
        clientPush
          .rpush(requestList, JSON.stringify({ id, replyTo: replyList, params }))
          .catch((err: unknown) => pending.reject(id, err as Error));
        return promise;
      },
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

// Where does one request's time go? Runs sequential requests (c=1) and timestamps each hop by
// wrapping the transports that core is given (no change to any package):
//
//   client request() → client transport.send(rpc) → service handler called → service
//   transport.send(reply) → client response handler called → request() resolved
//
//   npx tsx --conditions=@nuropb/source bench/src/tools/timeline.ts <memory|amqp|nats|redis> [--seconds S] [--encrypt nacl|rsa-fernet]
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { createServiceKeys } from "@nuropb/crypto";
import type { Transport } from "@nuropb/protocol";
import { configureMesh, createAmqpTransport } from "@nuropb/transport-amqp";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import { createNatsTransport } from "@nuropb/transport-nats";
import { createRedisTransport } from "@nuropb/transport-redis";
import { provided, stopBrokers, useBroker } from "../brokers.ts";
import { startNuropbEcho } from "../peers/nuropb-echo.ts";
import { runTag, smallParams, withCleanup } from "../rr.ts";
import { median, quantile } from "../suite.ts";

const HOPS = [
  "client core: request() → transport.send",
  "send → service handler (transport + broker + transport)",
  "service core: handler → transport.send(reply)",
  "reply send → client response handler (transport + broker + transport)",
  "client core: response handler → request() resolved",
] as const;

let marks: number[] = [];
const mark = (): void => void marks.push(performance.now());

/** The transport, with a timestamp taken on every send and before every delivery handler. */
function timed(t: Transport): Transport {
  return new Proxy(t, {
    get(target, prop) {
      if (prop === "send") {
        return (...args: Parameters<Transport["send"]>) => {
          mark();
          return target.send(...args);
        };
      }
      if (prop === "consumeService") {
        return (...[spec, handler]: Parameters<Transport["consumeService"]>) =>
          target.consumeService(spec, (d) => {
            mark();
            return handler(d);
          });
      }
      if (prop === "consumeResponses") {
        return (...[spec, handler]: Parameters<Transport["consumeResponses"]>) =>
          target.consumeResponses(spec, (d) => {
            mark();
            return handler(d);
          });
      }
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

async function makeTransport(kind: string): Promise<() => Transport> {
  switch (kind) {
    case "memory": {
      const hub = createMemoryHub();
      return () => createMemoryTransport({ hub });
    }
    case "amqp": {
      const url = `${provided(await useBroker("rabbitmq"), "amqpUrl")}/bench-tl-${runTag()}`;
      await configureMesh({ url });
      return () => createAmqpTransport({ url });
    }
    case "nats": {
      const url = provided(await useBroker("nats"), "natsUrl");
      const mesh = `bench_${runTag()}`;
      return () => createNatsTransport({ servers: url, mesh });
    }
    case "redis": {
      const url = provided(await useBroker("redis"), "redisUrl");
      const mesh = `bench-${runTag()}`;
      return () => createRedisTransport({ url, mesh });
    }
    default:
      throw new TypeError(`unknown transport ${kind} (memory, amqp, nats, redis)`);
  }
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { seconds: { type: "string", default: "4" }, encrypt: { type: "string" } },
  });
  const kind = positionals[0] ?? "memory";
  const encrypt = values.encrypt as "nacl" | "rsa-fernet" | undefined;
  try {
    await withCleanup(async (defer) => {
      const make = await makeTransport(kind);
      const echo = await startNuropbEcho(
        () => timed(make()),
        `echo-${runTag()}`,
        encrypt === undefined ? {} : { keys: createServiceKeys({ rsa: true, nacl: true }) },
      );
      defer(() => echo.close());
      const client = await echo.addClient(
        encrypt === undefined ? {} : { encryption: { suites: [encrypt] }, encrypted: true },
      );
      const params = smallParams();
      for (let i = 0; i < 500; i++) await client.call(params); // warm-up
      const segments: number[][] = HOPS.map(() => []);
      const totals: number[] = [];
      let skipped = 0;
      const end = performance.now() + Number(values.seconds) * 1000;
      while (performance.now() < end) {
        marks = [];
        const t0 = performance.now();
        await client.call(params);
        const t1 = performance.now();
        const points = [t0, ...marks, t1];
        if (points.length !== HOPS.length + 1) {
          skipped++; // a stray send (e.g. a describe) in between: not a clean sample
          continue;
        }
        for (let h = 0; h < HOPS.length; h++) {
          (segments[h] as number[]).push(
            ((points[h + 1] as number) - (points[h] as number)) * 1000,
          );
        }
        totals.push((t1 - t0) * 1000);
      }
      const us = (v: number): string => v.toFixed(1).padStart(8);
      console.log(
        `# nuropb ${kind}${encrypt ? ` (${encrypt})` : ""}, c=1, ${String(totals.length)} requests (${String(skipped)} skipped): µs per hop, p50 / p90`,
      );
      HOPS.forEach((name, h) => {
        const s = segments[h] as number[];
        console.log(`${us(median(s))} ${us(quantile(s, 0.9))}  ${name}`);
      });
      console.log(`${us(median(totals))} ${us(quantile(totals, 0.9))}  total`);
    });
  } finally {
    await stopBrokers();
  }
}

await main();

// Profiles one request/response case under closed-loop load: the CPU profile of this process
// (client + service) over the measured window only, summarised by function and by package, plus
// the CPU used by the broker process in the same window.
//
//   npx tsx --conditions=@nuropb/source bench/src/tools/profile.ts <case> [options]
//
// cases: nuropb-memory, nuropb-amqp, nuropb-nats, nuropb-redis, raw-amqp, raw-amqp-wire (raw
//        amqplib carrying nuropb's headers and envelopes), raw-nats, raw-nats-jetstream (the same
//        durable work queue as nuropb's, hand-written), raw-redis, raw-redis-streams (the
//        durable Redis Streams echo, hand-written, no Lua),
//        moleculer-fake, moleculer-amqp, moleculer-nats, moleculer-redis (Moleculer's transporters,
//        as the suites configure them)
// options: --c N (in flight, default 64), --seconds S (default 6),
//          --encrypt x25519-aes-gcm|nacl|rsa-fernet,
//          --cipher-threads N (with --encrypt: service and client seal/open on N threads each),
//          --large (16 KB params), --out FILE.cpuprofile (default bench-<case>.cpuprofile in cwd),
//          --top N (functions listed, default 30)
import { readFileSync, writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { createServiceKeys } from "@nuropb/crypto";
import type { Transport } from "@nuropb/protocol";
import { configureMesh, createAmqpTransport } from "@nuropb/transport-amqp";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import { createNatsTransport } from "@nuropb/transport-nats";
import { createRedisTransport } from "@nuropb/transport-redis";
import { provided, stopBrokers, useBroker } from "../brokers.ts";
import { runClosedLoop } from "../load.ts";
import { startMoleculerEcho } from "../peers/moleculer-echo.ts";
import { startNuropbEcho } from "../peers/nuropb-echo.ts";
import { startRawAmqpEcho } from "../peers/raw-amqp.ts";
import { startRawNatsEcho } from "../peers/raw-nats.ts";
import { startRawNatsJetStreamEcho } from "../peers/raw-nats-jetstream.ts";
import { startRawRedisEcho } from "../peers/raw-redis.ts";
import { startRawRedisStreamsEcho } from "../peers/raw-redis-streams.ts";
import { largeParams, runTag, smallParams, withCleanup } from "../rr.ts";
import { summariseProfile } from "./profile-summary.ts";
import type { CpuProfile } from "./profile-summary.ts";

const CASES = [
  "nuropb-memory",
  "nuropb-amqp",
  "nuropb-nats",
  "nuropb-redis",
  "raw-amqp",
  "raw-amqp-wire",
  "raw-nats",
  "raw-nats-jetstream",
  "raw-redis",
  "raw-redis-streams",
  "moleculer-fake",
  "moleculer-amqp",
  "moleculer-nats",
  "moleculer-redis",
] as const;
type CaseName = (typeof CASES)[number];
const ENCRYPT = ["x25519-aes-gcm", "nacl", "rsa-fernet"] as const;
type Encrypt = (typeof ENCRYPT)[number];

interface Setup {
  readonly call: (params: unknown) => Promise<unknown>;
  /** Pid of the broker process, to measure its CPU. */
  readonly brokerPid?: number;
}

async function brokerPid(kind: "rabbitmq" | "nats" | "redis"): Promise<number | undefined> {
  const p = await useBroker(kind);
  let file: string | undefined;
  if (kind === "rabbitmq") {
    file = (JSON.parse(provided(p, "rabbitCtlEnv")) as Record<string, string>).RABBITMQ_PID_FILE;
  } else file = kind === "nats" ? p.natsPidFile : p.redisPidFile;
  try {
    return file === undefined ? undefined : Number(readFileSync(file, "utf8").trim());
  } catch {
    return undefined;
  }
}

async function setup(
  name: CaseName,
  encrypt: Encrypt | undefined,
  cipherThreads: number,
  defer: (c: () => Promise<unknown>) => void,
): Promise<Setup> {
  const nuropb = async (make: () => Transport): Promise<Setup["call"]> => {
    const echo = await startNuropbEcho(
      make,
      `echo-${runTag()}`,
      encrypt === undefined
        ? {}
        : { keys: createServiceKeys({ rsa: true, nacl: true }), cipherThreads },
    );
    defer(() => echo.close());
    const client = await echo.addClient(
      encrypt === undefined
        ? {}
        : { encryption: { suites: [encrypt], cipherThreads }, encrypted: true },
    );
    return client.call;
  };
  switch (name) {
    case "nuropb-memory": {
      const hub = createMemoryHub();
      return { call: await nuropb(() => createMemoryTransport({ hub })) };
    }
    case "moleculer-fake": {
      const m = await startMoleculerEcho("Fake");
      defer(() => m.close());
      return { call: m.call };
    }
    case "moleculer-amqp": {
      const url = `${provided(await useBroker("rabbitmq"), "amqpUrl")}/bench-prof-${runTag()}`;
      await configureMesh({ url });
      const m = await startMoleculerEcho({
        type: "AMQP",
        options: { url, prefetch: 64, socketOptions: { noDelay: true } },
      });
      defer(() => m.close());
      const pid = await brokerPid("rabbitmq");
      return { call: m.call, ...(pid ? { brokerPid: pid } : {}) };
    }
    case "moleculer-nats": {
      const url = provided(await useBroker("nats"), "natsUrl");
      const m = await startMoleculerEcho({ type: "NATS", options: { url } });
      defer(() => m.close());
      const pid = await brokerPid("nats");
      return { call: m.call, ...(pid ? { brokerPid: pid } : {}) };
    }
    case "moleculer-redis": {
      const url = provided(await useBroker("redis"), "redisUrl");
      const m = await startMoleculerEcho({ type: "Redis", options: url });
      defer(() => m.close());
      const pid = await brokerPid("redis");
      return { call: m.call, ...(pid ? { brokerPid: pid } : {}) };
    }
    case "nuropb-amqp":
    case "raw-amqp":
    case "raw-amqp-wire": {
      const url = `${provided(await useBroker("rabbitmq"), "amqpUrl")}/bench-prof-${runTag()}`;
      await configureMesh({ url });
      const pid = await brokerPid("rabbitmq");
      if (name !== "nuropb-amqp") {
        const raw = await startRawAmqpEcho(url, { nuropbWire: name === "raw-amqp-wire" });
        defer(() => raw.close());
        return { call: raw.call, ...(pid ? { brokerPid: pid } : {}) };
      }
      return {
        call: await nuropb(() => createAmqpTransport({ url })),
        ...(pid ? { brokerPid: pid } : {}),
      };
    }
    case "nuropb-nats":
    case "raw-nats":
    case "raw-nats-jetstream": {
      const url = provided(await useBroker("nats"), "natsUrl");
      const pid = await brokerPid("nats");
      if (name === "raw-nats") {
        const raw = await startRawNatsEcho(url);
        defer(() => raw.close());
        return { call: raw.callReplySub, ...(pid ? { brokerPid: pid } : {}) };
      }
      if (name === "raw-nats-jetstream") {
        const raw = await startRawNatsJetStreamEcho(url);
        defer(() => raw.close());
        return { call: raw.call, ...(pid ? { brokerPid: pid } : {}) };
      }
      const mesh = `bench_${runTag()}`;
      return {
        call: await nuropb(() => createNatsTransport({ servers: url, mesh })),
        ...(pid ? { brokerPid: pid } : {}),
      };
    }
    case "nuropb-redis":
    case "raw-redis":
    case "raw-redis-streams": {
      const url = provided(await useBroker("redis"), "redisUrl");
      const pid = await brokerPid("redis");
      if (name === "raw-redis") {
        const raw = await startRawRedisEcho(url);
        defer(() => raw.close());
        return { call: raw.call, ...(pid ? { brokerPid: pid } : {}) };
      }
      if (name === "raw-redis-streams") {
        const raw = await startRawRedisStreamsEcho(url);
        defer(() => raw.close());
        return { call: raw.call, ...(pid ? { brokerPid: pid } : {}) };
      }
      const mesh = `bench-${runTag()}`;
      return {
        call: await nuropb(() => createRedisTransport({ url, mesh })),
        ...(pid ? { brokerPid: pid } : {}),
      };
    }
  }
}

/** utime + stime of a process (and its threads), in seconds; undefined when unreadable. */
function processCpuSec(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${String(pid)}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // fields[11] = utime, fields[12] = stime (0-based after the state field), in clock ticks.
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return undefined;
  }
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      c: { type: "string", default: "64" },
      seconds: { type: "string", default: "6" },
      encrypt: { type: "string" },
      "cipher-threads": { type: "string" },
      large: { type: "boolean", default: false },
      out: { type: "string" },
      top: { type: "string", default: "30" },
    },
  });
  const name = positionals[0] as CaseName | undefined;
  if (name === undefined || !CASES.includes(name)) {
    console.error(
      `usage: profile.ts <${CASES.join("|")}> [--c N] [--seconds S] [--encrypt ${ENCRYPT.join("|")} [--cipher-threads N]] [--large] [--out FILE] [--top N]`,
    );
    process.exitCode = 2;
    return;
  }
  const encrypt = values.encrypt as Encrypt | undefined;
  const cipherThreads = Number(values["cipher-threads"] ?? 0);
  if (encrypt !== undefined && !ENCRYPT.includes(encrypt)) {
    throw new TypeError(`--encrypt must be one of ${ENCRYPT.join(", ")}`);
  }
  const concurrency = Number(values.c);
  const seconds = Number(values.seconds);
  const params = values.large ? largeParams() : smallParams();
  const out = values.out ?? `bench-${name}${encrypt ? `-${encrypt}` : ""}.cpuprofile`;
  try {
    await withCleanup(async (defer) => {
      const s = await setup(name, encrypt, cipherThreads, defer);
      await runClosedLoop(() => s.call(params), { concurrency, durationMs: 1500 });
      const session = new Session();
      session.connect();
      await session.post("Profiler.enable");
      await session.post("Profiler.setSamplingInterval", { interval: 200 });
      const brokerBefore = s.brokerPid === undefined ? undefined : processCpuSec(s.brokerPid);
      const cpuBefore = process.cpuUsage();
      const t0 = performance.now();
      await session.post("Profiler.start");
      const r = await runClosedLoop(() => s.call(params), {
        concurrency,
        durationMs: seconds * 1000,
      });
      const { profile } = (await session.post("Profiler.stop")) as { profile: CpuProfile };
      const wallSec = (performance.now() - t0) / 1000;
      const cpu = process.cpuUsage(cpuBefore);
      const brokerAfter = s.brokerPid === undefined ? undefined : processCpuSec(s.brokerPid);
      session.disconnect();
      writeFileSync(out, JSON.stringify(profile));
      const pct = (sec: number): string => `${((sec / wallSec) * 100).toFixed(0)} %`;
      console.log(
        `# ${name}${encrypt ? ` (${encrypt})` : ""} c=${String(concurrency)} ${values.large ? "16 KB" : "100 B"}: ${Math.round(r.reqPerSec).toLocaleString("en-US")} req/s, p50 ${Math.round(r.p50Us)} µs, p99 ${Math.round(r.p99Us)} µs`,
      );
      console.log(
        `# CPU in the window (${wallSec.toFixed(1)} s): this process ${pct((cpu.user + cpu.system) / 1e6)} (user ${pct(cpu.user / 1e6)}, sys ${pct(cpu.system / 1e6)})` +
          (brokerBefore !== undefined && brokerAfter !== undefined
            ? `, broker ${pct(brokerAfter - brokerBefore)}`
            : "") +
          `; per request: this process ${((cpu.user + cpu.system) / r.requests).toFixed(1)} µs` +
          (brokerBefore !== undefined && brokerAfter !== undefined
            ? `, broker ${(((brokerAfter - brokerBefore) * 1e6) / r.requests).toFixed(1)} µs`
            : ""),
      );
      console.log(`# profile written to ${out}\n`);
      console.log(summariseProfile(profile, { top: Number(values.top) }));
    });
  } finally {
    await stopBrokers();
  }
}

await main();

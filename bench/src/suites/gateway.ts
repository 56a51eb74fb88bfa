import { spawn } from "node:child_process";
import type { ChildProcessByStdio } from "node:child_process";
import { Agent, request as httpRequest } from "node:http";
import { createRequire } from "node:module";
import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";
import type { Readable, Writable } from "node:stream";
import { pathToFileURL } from "node:url";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { createClient, createService } from "@nuropb/core";
import { createGateway } from "@nuropb/gateway";
import type { Gateway } from "@nuropb/gateway";
import { createGatewayClient } from "@nuropb/gateway-client";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import { WebSocket } from "ws";
import {
  RR_COLUMNS,
  describeRatio,
  errorNotes,
  jsonBytes,
  measureScenario,
  pick,
  runTag,
  sizeLabel,
  smallParams,
  statsRow,
  withCleanup,
} from "../rr.ts";
import type { CaseStats, EchoCase } from "../rr.ts";
import { formatInt, median } from "../suite.ts";
import type { BenchSuite, SuiteResult } from "../suite.ts";

const DIRECT = "direct client";
const REST = "gateway REST";
const WS = "gateway WebSocket";

/** Idle WebSocket connections opened to measure the gateway's memory per connection. */
const IDLE_CONNECTIONS = 500;
/** Subscribers of one pattern, and events published per fan-out round. */
const SUBSCRIBERS = 200;
const EVENTS_PER_ROUND = 500;
const FANOUT_ROUNDS = 3;
/** How long a fan-out round may take before it is reported as lost events. */
const FANOUT_TIMEOUT_MS = 30_000;

class Echo {
  echo(params: Record<string, unknown>): Record<string, unknown> {
    return params;
  }
}

/**
 * The far end of the memory and fan-out figures: a separate Node process holding WebSocket
 * clients (`ws`), so that what the bench process measures is the gateway's side only. It reads
 * one command a line on stdin and answers one line on stdout:
 * `open <n> <url> [pattern]` → `opened <total>` (each socket subscribed when a pattern is given),
 * `count` → `count <events received>`, `close` → `closed`.
 */
const SOCKET_HOLDER = `
import { createInterface } from "node:readline";
const WebSocket = (await import(process.env.BENCH_WS_MODULE)).default;
const sockets = [];
let events = 0;
const out = (line) => process.stdout.write(line + "\\n");
function openOne(url, pattern) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    ws.on("error", reject);
    ws.on("message", (data) => {
      const m = JSON.parse(String(data));
      if (m.type === "event") events++;
      else if (m.type === "ok") resolve();
      else if (m.type === "error") reject(new Error(m.error.description));
    });
    ws.on("open", () => {
      sockets.push(ws);
      if (pattern === undefined) resolve();
      else ws.send(JSON.stringify({ id: "s", type: "subscribe", pattern }));
    });
  });
}
const lines = createInterface({ input: process.stdin });
let work = Promise.resolve();
lines.on("line", (line) => {
  work = work.then(async () => {
    const [cmd, ...args] = line.split(" ");
    if (cmd === "open") {
      const [n, url, pattern] = args;
      for (let done = 0; done < Number(n); done += 50) {
        const batch = Math.min(50, Number(n) - done);
        await Promise.all(Array.from({ length: batch }, () => openOne(url, pattern)));
      }
      out("opened " + sockets.length);
    } else if (cmd === "count") {
      out("count " + events);
    } else if (cmd === "close") {
      await Promise.all(sockets.splice(0).map((ws) => new Promise((resolve) => {
        ws.once("close", resolve);
        ws.close();
      })));
      out("closed");
    }
  }).catch((err) => {
    process.stderr.write("socket holder: " + err.message + "\\n");
    process.exit(1);
  });
});
lines.on("close", () => process.exit(0));
`;

/** The socket-holding process and a way to ask it something. */
interface SocketHolder {
  ask(command: string): Promise<string>;
  stop(): Promise<void>;
}

function startSocketHolder(): SocketHolder {
  const wsModule = pathToFileURL(createRequire(import.meta.url).resolve("ws")).href;
  const child: ChildProcessByStdio<Writable, Readable, null> = spawn(
    process.execPath,
    ["--input-type=module", "-e", SOCKET_HOLDER],
    { env: { ...process.env, BENCH_WS_MODULE: wsModule }, stdio: ["pipe", "pipe", "inherit"] },
  );
  const waiting: { resolve: (line: string) => void; reject: (err: Error) => void }[] = [];
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.once("exit", (code) => {
    for (const w of waiting.splice(0)) {
      w.reject(new Error(`the socket holder exited (${String(code)})`));
    }
  });
  createInterface({ input: child.stdout }).on("line", (line) => waiting.shift()?.resolve(line));
  return {
    ask(command) {
      return new Promise((resolve, reject) => {
        waiting.push({ resolve, reject });
        child.stdin.write(`${command}\n`);
      });
    },
    async stop() {
      child.stdin.end();
      await exited;
    },
  };
}

/** A full garbage collection (the bench runs without --expose-gc, so it is switched on here). */
function collector(): () => Promise<void> {
  let gc = (globalThis as { gc?: () => void }).gc;
  if (typeof gc !== "function") {
    setFlagsFromString("--expose-gc");
    gc = runInNewContext("gc") as () => void;
  }
  const full = gc;
  return async () => {
    for (let i = 0; i < 3; i++) {
      full();
      await new Promise((resolve) => setImmediate(resolve));
    }
  };
}

async function until(check: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** One POST through a keep-alive agent: the REST call as a program (not a browser) makes it. */
function restCaller(
  base: string,
  path: string,
  agent: Agent,
): (params: unknown) => Promise<unknown> {
  const { hostname, port } = new URL(base);
  return (params) =>
    new Promise((resolve, reject) => {
      const body = JSON.stringify(params);
      const req = httpRequest(
        {
          hostname,
          port,
          path,
          method: "POST",
          agent,
          headers: {
            "content-type": "application/json",
            "content-length": Buffer.byteLength(body),
          },
        },
        (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (chunk: string) => (text += chunk));
          res.on("end", () => {
            if (res.statusCode === 200) resolve(JSON.parse(text));
            else reject(new Error(`HTTP ${String(res.statusCode)}: ${text}`));
          });
          res.on("error", reject);
        },
      );
      req.on("error", reject);
      req.end(body);
    });
}

interface MemoryFigures {
  readonly heapPerConnection: number;
  readonly externalPerConnection: number;
  readonly rssPerConnection: number;
  readonly heapAfterClose: number;
}

/** The gateway process's memory per open idle WebSocket connection, after full collections. */
async function memoryPerConnection(
  gateway: Gateway,
  holder: SocketHolder,
  wsUrl: string,
): Promise<MemoryFigures> {
  const gc = collector();
  // Warm the upgrade path first, so the figure holds connections, not first-use code.
  await holder.ask(`open 50 ${wsUrl}`);
  await holder.ask("close");
  await until(() => gateway.stats().connections === 0, "the warm-up connections to close");
  await gc();
  const before = process.memoryUsage();
  await holder.ask(`open ${String(IDLE_CONNECTIONS)} ${wsUrl}`);
  await until(
    () => gateway.stats().connections === IDLE_CONNECTIONS,
    `${String(IDLE_CONNECTIONS)} connections`,
  );
  await gc();
  const open = process.memoryUsage();
  await holder.ask("close");
  await until(() => gateway.stats().connections === 0, "the connections to close");
  await gc();
  const after = process.memoryUsage();
  const per = (a: number, b: number): number => (a - b) / IDLE_CONNECTIONS;
  return {
    heapPerConnection: per(open.heapUsed, before.heapUsed),
    externalPerConnection: per(open.external, before.external),
    rssPerConnection: per(open.rss, before.rss),
    heapAfterClose: after.heapUsed - before.heapUsed,
  };
}

interface FanoutFigures {
  /** Event messages the gateway handed to the subscribers' sockets, per second. */
  readonly handedPerSec: number[];
  /** Event messages the subscribers received and parsed, per second. */
  readonly deliveredPerSec: number[];
  readonly publishedPerSec: number[];
  readonly lost: number;
}

/** Events published on the mesh and delivered to every subscriber of one pattern. */
async function fanout(
  gateway: Gateway,
  holder: SocketHolder,
  wsUrl: string,
  publish: (n: number) => Promise<unknown>,
): Promise<FanoutFigures> {
  await holder.ask(`open ${String(SUBSCRIBERS)} ${wsUrl} bench.#`);
  await until(() => gateway.stats().subscriptions === SUBSCRIBERS, "the subscriptions");
  const received = async (): Promise<number> => Number((await holder.ask("count")).split(" ")[1]);
  const handedPerSec: number[] = [];
  const deliveredPerSec: number[] = [];
  const publishedPerSec: number[] = [];
  const messages = SUBSCRIBERS * EVENTS_PER_ROUND;
  let lost = 0;
  // The first round warms up, unrecorded.
  for (let round = 0; round <= FANOUT_ROUNDS; round++) {
    const start = await received();
    const handedAtStart = gateway.stats().eventsDelivered;
    const t0 = performance.now();
    for (let i = 0; i < EVENTS_PER_ROUND; i++) await publish(i);
    const published = performance.now();
    let handed = Infinity;
    let got = start;
    while (got < start + messages && performance.now() - t0 < FANOUT_TIMEOUT_MS) {
      await new Promise((resolve) => setTimeout(resolve, 5));
      if (handed === Infinity && gateway.stats().eventsDelivered >= handedAtStart + messages) {
        handed = performance.now();
      }
      got = await received();
    }
    const elapsed = performance.now() - t0;
    if (round === 0) continue;
    lost += start + messages - got;
    handedPerSec.push((messages / (Math.min(handed, performance.now()) - t0)) * 1000);
    deliveredPerSec.push(((got - start) / elapsed) * 1000);
    publishedPerSec.push((EVENTS_PER_ROUND / (published - t0)) * 1000);
  }
  await holder.ask("close");
  return { handedPerSec, deliveredPerSec, publishedPerSec, lost };
}

/**
 * The gateway in front of a memory mesh: an echo through REST (node:http, keep-alive) and
 * through the WebSocket (`@nuropb/gateway-client` on `ws`) beside the same echo from a direct
 * core client, at 1 and 64 in flight; the gateway process's memory per idle WebSocket; and the
 * rate at which one event reaches many subscribers of one pattern.
 */
export const gatewaySuite: BenchSuite = {
  name: "gateway",
  description:
    "nuropb gateway on the memory mesh: echo via REST and WebSocket beside a direct client; memory per idle WebSocket; event fan-out",
  run(): Promise<SuiteResult> {
    return withCleanup(async (defer) => {
      const hub = createMemoryHub();
      const transports = [0, 1, 2].map(() => createMemoryTransport({ hub }));
      defer(() => Promise.all(transports.map((t) => t.close())));
      const [serviceT, clientT, gatewayT] = transports as [
        (typeof transports)[0],
        (typeof transports)[0],
        (typeof transports)[0],
      ];
      const name = `echo-${runTag()}`;
      const service = createService({ transport: serviceT, name, instance: new Echo() });
      await service.connect();
      defer(() => service.disconnect());
      const client = createClient({ transport: clientT });
      await client.connect();
      defer(() => client.disconnect());
      const gateway = createGateway({
        transport: gatewayT,
        name: `gateway-${runTag()}`,
        expose: { services: { [name]: { requests: ["echo"] } }, subscribe: ["bench.#"] },
        websocket: { maxInFlight: 256 },
        pages: false,
      });
      const base = await gateway.listen();
      defer(() => gateway.close());
      const wsUrl = `${base.replace(/^http/, "ws")}/ws`;

      const agent = new Agent({ keepAlive: true, maxSockets: 64 });
      defer(() => agent.destroy());
      const ws = createGatewayClient({ url: base, WebSocket });
      await ws.connect();
      defer(() => ws.close());

      const cases: EchoCase[] = [
        {
          name: DIRECT,
          call: (p) => client.request(name, "echo", p as Record<string, unknown>),
        },
        { name: REST, call: restCaller(base, `/api/${name}/echo`, agent) },
        {
          name: WS,
          call: (p) => ws.request(name, "echo", p as Record<string, unknown>),
        },
      ];
      const params = smallParams();
      const size = sizeLabel(jsonBytes(params));
      const stats: CaseStats[] = [];
      for (const concurrency of [1, 64]) {
        stats.push(
          ...(await measureScenario(
            cases,
            { size, concurrency, params },
            { rounds: 5, sampleMs: 500 },
          )),
        );
      }
      await ws.close();
      agent.destroy();

      const holder = startSocketHolder();
      defer(() => holder.stop());
      const memory = await memoryPerConnection(gateway, holder, wsUrl);
      const event = { n: 0, note: "a small event" };
      const fan = await fanout(gateway, holder, wsUrl, (n) =>
        client.publishEvent("bench.tick", { ...event, n }),
      );
      const { slowConsumerCloses, peakBufferedBytes } = gateway.stats();

      const at = (c: number, n: string): CaseStats =>
        pick(
          stats.filter((s) => s.scenario.concurrency === c),
          n,
        );
      const kb = (bytes: number): string => `${(bytes / 1024).toFixed(1)} KB`;
      return {
        columns: RR_COLUMNS,
        rows: stats.map(statsRow),
        notes: [
          "medians of 5 interleaved rounds of 500 ms per case, after warm-up; echo of a JSON object; one process holds the service, the gateway and the callers (2 cores shared)",
          `${DIRECT}: @nuropb/core client on the same memory hub; ${REST}: POST /api/{service}/echo with node:http, keep-alive agent (up to 64 sockets); ${WS}: @nuropb/gateway-client over ws, one connection carrying all calls in flight`,
          `c=1 p50: ${REST} = ${describeRatio(at(1, REST), at(1, DIRECT), "latency")} of the direct client's, ${WS} = ${describeRatio(at(1, WS), at(1, DIRECT), "latency")}`,
          `memory per idle WebSocket (${String(IDLE_CONNECTIONS)} open, clients in another process, after full GCs): JS heap ${kb(memory.heapPerConnection)}, external ${kb(memory.externalPerConnection)}, RSS ${kb(memory.rssPerConnection)} (RSS moves by whole pages the heap may already hold; kernel socket buffers are not in it); heap once they closed: ${memory.heapAfterClose >= 0 ? "+" : ""}${kb(memory.heapAfterClose)} against before`,
          `fan-out: ${String(EVENTS_PER_ROUND)} events published on the mesh (one after another) to ${String(SUBSCRIBERS)} WebSocket subscribers of bench.#, clients in another process that parse every event, medians of ${String(FANOUT_ROUNDS)} rounds after one unrecorded: ${formatInt(median(fan.deliveredPerSec))} events/s received (rounds ${formatInt(Math.min(...fan.deliveredPerSec))}–${formatInt(Math.max(...fan.deliveredPerSec))}), i.e. ${formatInt(median(fan.deliveredPerSec) / SUBSCRIBERS)} published events/s reaching all ${String(SUBSCRIBERS)}; handed to the sockets by the gateway: ${formatInt(median(fan.handedPerSec))} events/s; publishing alone: ${formatInt(median(fan.publishedPerSec))} events/s; ${String(fan.lost)} lost, ${String(slowConsumerCloses)} slow-consumer closes, peak send buffer ${kb(peakBufferedBytes)}`,
          ...errorNotes(stats),
          ...(fan.lost > 0 ? [`!! fan-out: ${String(fan.lost)} deliveries missing`] : []),
        ],
        comparison: [
          `through the gateway at c=64: ${REST} = ${describeRatio(at(64, REST), at(64, DIRECT), "throughput")} of the direct client's req/s, ${WS} = ${describeRatio(at(64, WS), at(64, DIRECT), "throughput")}`,
          `at c=1: ${REST} = ${describeRatio(at(1, REST), at(1, DIRECT), "throughput")}, ${WS} = ${describeRatio(at(1, WS), at(1, DIRECT), "throughput")}`,
        ].join("\n"),
      };
    });
  },
};

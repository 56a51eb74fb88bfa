import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import type { Transport } from "@nuropb/protocol";
import { configureMesh, createAmqpTransport, teardownMesh } from "@nuropb/transport-amqp";
import type { AmqpTransportOptions, ConfigureMeshOptions } from "@nuropb/transport-amqp";
import { inject } from "vitest";
import { startAmqpSniffer } from "./amqp-sniffer.ts";
import type { AmqpSniffer } from "./amqp-sniffer.ts";

/** What the RabbitMQ harness provides, read once per test file. */
export interface RabbitEnv {
  readonly amqpUrl: string;
  readonly amqpsUrl: string;
  readonly amqpCaFile: string;
  readonly amqpClientCertFile: string;
  readonly amqpClientKeyFile: string;
  readonly amqpMgmtUrl: string;
  readonly rabbitNode: string;
  readonly rabbitCtl: string;
  readonly rabbitCtlEnv: Readonly<Record<string, string>>;
}

/** The private RabbitMQ node of this run (see `src/brokers/rabbitmq.ts`). */
export function rabbitEnv(): RabbitEnv {
  return {
    amqpUrl: inject("amqpUrl"),
    amqpsUrl: inject("amqpsUrl"),
    amqpCaFile: inject("amqpCaFile"),
    amqpClientCertFile: inject("amqpClientCertFile"),
    amqpClientKeyFile: inject("amqpClientKeyFile"),
    amqpMgmtUrl: inject("amqpMgmtUrl"),
    rabbitNode: inject("rabbitNode"),
    rabbitCtl: inject("rabbitCtl"),
    rabbitCtlEnv: JSON.parse(inject("rabbitCtlEnv")) as Record<string, string>,
  };
}

/** A vhost name unique to this call: `{prefix}-{12 hex}`. */
export function uniqueVhost(prefix: string): string {
  return `${prefix}-${randomBytes(6).toString("hex")}`;
}

/** A configured mesh (vhost + exchanges + DL queue) on the private node. */
export interface TestMesh {
  readonly vhost: string;
  /** `amqp://guest:guest@127.0.0.1:PORT/{vhost}` */
  readonly url: string;
  /** Deletes the vhost. */
  teardown(): Promise<void>;
}

/** Creates and configures a fresh mesh (its own vhost) with {@link configureMesh}. */
export async function createTestMesh(
  prefix: string,
  options: Omit<ConfigureMeshOptions, "url"> = {},
): Promise<TestMesh> {
  const env = rabbitEnv();
  const vhost = uniqueVhost(prefix);
  const url = `${env.amqpUrl}/${encodeURIComponent(vhost)}`;
  await configureMesh({ url, ...options });
  return {
    vhost,
    url,
    teardown: async () => {
      await teardownMesh({ url });
    },
  };
}

/** Splits a management URL with credentials into fetch-able base and an Authorization header. */
function mgmt(): { base: string; auth: string } {
  const u = new URL(rabbitEnv().amqpMgmtUrl);
  const auth = `Basic ${Buffer.from(`${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`).toString("base64")}`;
  u.username = "";
  u.password = "";
  return { base: u.toString().replace(/\/+$/, ""), auth };
}

/** A management API GET; `null` for 404. */
export async function mgmtGet<T>(path: string): Promise<T | null> {
  const { base, auth } = mgmt();
  const res = await fetch(`${base}${path}`, { headers: { authorization: auth } });
  if (res.status === 404) return null;
  if (!res.ok) throw new Error(`GET ${path}: ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

/** Queue details as the management API reports them. */
export interface MgmtQueue {
  readonly name: string;
  readonly durable: boolean;
  readonly auto_delete: boolean;
  readonly exclusive: boolean;
  readonly arguments: Record<string, unknown>;
  readonly consumers?: number;
  readonly consumer_details?: readonly {
    exclusive: boolean;
    ack_required: boolean;
    prefetch_count: number;
  }[];
}

/** One queue of a vhost, or null. */
export function getQueue(vhost: string, name: string): Promise<MgmtQueue | null> {
  return mgmtGet<MgmtQueue>(`/queues/${encodeURIComponent(vhost)}/${encodeURIComponent(name)}`);
}

/** Bindings of a queue: `[source exchange, routing key]` pairs (the default-exchange one left out). */
export async function queueBindings(vhost: string, queue: string): Promise<[string, string][]> {
  const list =
    (await mgmtGet<{ source: string; routing_key: string }[]>(
      `/queues/${encodeURIComponent(vhost)}/${encodeURIComponent(queue)}/bindings`,
    )) ?? [];
  return list.filter((b) => b.source !== "").map((b) => [b.source, b.routing_key]);
}

/** Exchange details, or null. */
export function getExchange(
  vhost: string,
  name: string,
): Promise<{ type: string; durable: boolean; auto_delete: boolean; internal: boolean } | null> {
  return mgmtGet(`/exchanges/${encodeURIComponent(vhost)}/${encodeURIComponent(name)}`);
}

/**
 * Force-closes the broker connection whose client-provided `connection_name` is `name` (what a
 * network failure or an operator would do), waiting until the management API lists it.
 */
export async function closeConnectionByName(name: string, timeoutMs = 10_000): Promise<void> {
  const { base, auth } = mgmt();
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const list =
      (await mgmtGet<{ name: string; user_provided_name?: string }[]>(
        "/connections?columns=name,user_provided_name",
      )) ?? [];
    const found = list.filter((c) => c.user_provided_name === name);
    if (found.length > 0) {
      for (const c of found) {
        const res = await fetch(`${base}/connections/${encodeURIComponent(c.name)}`, {
          method: "DELETE",
          headers: { authorization: auth, "x-reason": "disrupted by the integration test" },
        });
        if (!res.ok && res.status !== 404) throw new Error(`DELETE connection: ${res.status}`);
      }
      return;
    }
    if (Date.now() > deadline)
      throw new Error(`connection '${name}' never showed up in the management API`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Runs `rabbitmqctl -n NODE ...args` against the private node. */
export function rabbitCtl(...args: string[]): Promise<string> {
  const env = rabbitEnv();
  return new Promise((resolve, reject) => {
    execFile(
      env.rabbitCtl,
      ["-n", env.rabbitNode, ...args],
      { env: { ...env.rabbitCtlEnv }, timeout: 120_000 },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`rabbitmqctl ${args.join(" ")}: ${stderr || err.message}`));
        else resolve(stdout);
      },
    );
  });
}

/** Stops the RabbitMQ application (the Erlang node keeps running): every client is disconnected. */
export async function stopRabbitApp(): Promise<void> {
  await rabbitCtl("stop_app");
}

/** Starts the RabbitMQ application again and waits until it has booted. */
export async function startRabbitApp(): Promise<void> {
  await rabbitCtl("start_app");
  await rabbitCtl("await_startup", "--timeout", "60");
}

/** Transports that each reach the broker through a private TCP proxy, so one can be cut off. */
export interface DisruptableTransports {
  /** A new transport for `amqp://guest:guest@127.0.0.1:{its proxy}/{vhost}`. */
  create(vhost: string, options?: Omit<AmqpTransportOptions, "url">): Promise<Transport>;
  /**
   * Cuts the transport's TCP connection (like a network failure: no AMQP close, the socket just
   * dies). The proxy keeps listening, so the transport can reconnect at once.
   */
  disrupt(transport: Transport): Promise<void>;
  /** Closes every proxy. */
  closeAll(): Promise<void>;
}

/** See {@link DisruptableTransports}. */
export function disruptableTransports(): DisruptableTransports {
  const proxies = new WeakMap<Transport, AmqpSniffer>();
  const all: AmqpSniffer[] = [];
  const brokerPort = Number(new URL(rabbitEnv().amqpUrl).port);
  return {
    async create(vhost, options = {}) {
      const proxy = await startAmqpSniffer(brokerPort, { sniff: false });
      all.push(proxy);
      const t = createAmqpTransport({
        reconnect: { initialDelayMs: 50, maxDelayMs: 1_000 },
        ...options,
        url: `amqp://guest:guest@127.0.0.1:${proxy.port}/${encodeURIComponent(vhost)}`,
      });
      proxies.set(t, proxy);
      return t;
    },
    async disrupt(t) {
      const proxy = proxies.get(t);
      if (proxy === undefined) throw new Error("disrupt() got a transport it did not create");
      proxy.dropConnections();
    },
    async closeAll() {
      await Promise.allSettled(all.splice(0).map((p) => p.close()));
    },
  };
}

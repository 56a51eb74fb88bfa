import amqplib from "amqplib";
import { createClient, createService, publishToMesh } from "@nuropb/core";
import { NuropbTransportError, newId } from "@nuropb/protocol";
import {
  configureMesh,
  createAmqpTransport,
  markMeshCompact,
  teardownMesh,
} from "@nuropb/transport-amqp";
import { describeCoreConformance, waitFor } from "@nuropb/transport-testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { disruptableTransports, rabbitEnv, uniqueVhost } from "../src/amqp-helpers.ts";
import { pythonPeerScript, startPythonPeer } from "../src/python-peer.ts";

// The compact dialect (the NuroPb header fields in AMQP basic properties) end to end: every
// rule of core between compact participants, what the broker sees, and the mixed-mesh rule.
const env = rabbitEnv();
const vhost = uniqueVhost("compact");
const url = `${env.amqpUrl}/${vhost}`;
const plainVhost = uniqueVhost("compact-unmarked");
const plainUrl = `${env.amqpUrl}/${plainVhost}`;
const transports = disruptableTransports();
const T = 20_000;
let counter: amqplib.ChannelModel | undefined;
const closers: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  await configureMesh({ url });
  await markMeshCompact({ url });
  await configureMesh({ url: plainUrl });
  counter = await amqplib.connect(url);
}, T);
afterAll(async () => {
  for (const close of closers.reverse()) await close().catch(() => undefined);
  await transports.closeAll();
  await counter?.close();
  await teardownMesh({ url });
  await teardownMesh({ url: plainUrl });
}, T);

describeCoreConformance({
  name: "amqp, compact dialect",
  create: () => transports.create(vhost, { dialect: "compact" }),
  deadLetterCount: async () => {
    if (counter === undefined) throw new Error("not connected");
    const ch = await counter.createChannel();
    try {
      return (await ch.checkQueue("nuropb-dl-queue")).messageCount;
    } finally {
      await ch.close();
    }
  },
  disrupt: (t) => transports.disrupt(t),
});

class Echo {
  @publishToMesh()
  echo(params: { n: number }): unknown {
    return params;
  }
}

async function startEcho(name: string, dialect: "python" | "compact"): Promise<void> {
  const service = createService({
    transport: createAmqpTransport({ url, dialect }),
    name,
    instance: new Echo(),
  });
  await service.connect();
  closers.push(() => service.disconnect());
}

async function startClient(dialect: "python" | "compact") {
  const client = createClient({ transport: createAmqpTransport({ url, dialect }) });
  await client.connect();
  closers.push(() => client.disconnect());
  return client;
}

describe("compact dialect on the wire", () => {
  it(
    "a compact request reaches the broker with no headers table, the fields in its properties",
    async () => {
      const name = `wire-${newId()}`;
      const ch = await (counter as amqplib.ChannelModel).createChannel();
      closers.push(() => ch.close());
      const { queue } = await ch.assertQueue("", { exclusive: true });
      await ch.bindQueue(queue, "nuropb-rpc-exchange", name);
      const seen: amqplib.ConsumeMessage[] = [];
      await ch.consume(queue, (m) => m !== null && seen.push(m), { noAck: true });
      const client = await startClient("compact");
      const call = client
        .request(name, "echo", { n: 1 }, undefined, { ttlMs: 500 })
        .catch((e: unknown) => e);
      await waitFor(() => seen.length === 1, 10_000, "the request on the observer queue");
      await call;
      const p = seen[0]?.properties;
      expect(p?.headers ?? {}).toStrictEqual({});
      expect(p?.type).toBe("request");
      expect(p?.appId).toMatch(/^0\.1\.1 \S+$/);
      expect(p?.contentType).toBe("application/json");
    },
    T,
  );
});

describe("mixed mesh rule", () => {
  it(
    "a compact transport refuses a mesh that is not marked compact, with a typed error",
    async () => {
      const t = createAmqpTransport({ url: plainUrl, dialect: "compact" });
      const err = await t.connect().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(NuropbTransportError);
      expect((err as Error).message).toMatch(/needs a mesh marked compact, and mesh .* is not/);
      await t.close();
    },
    T,
  );

  it(
    "default and compact participants call each other both ways (every transport reads both forms)",
    async () => {
      const compactSvc = `compact-svc-${newId()}`;
      const pythonSvc = `python-svc-${newId()}`;
      await startEcho(compactSvc, "compact");
      await startEcho(pythonSvc, "python");
      const compactClient = await startClient("compact");
      const defaultClient = await startClient("python");
      for (const [client, svc] of [
        [compactClient, compactSvc],
        [compactClient, pythonSvc],
        [defaultClient, compactSvc],
        [defaultClient, pythonSvc],
      ] as const) {
        const got = await Promise.all(
          Array.from({ length: 8 }, (_, n) => client.request(svc, "echo", { n })),
        );
        expect(got).toEqual(Array.from({ length: 8 }, (_, n) => ({ n })));
      }
    },
    T,
  );

  it("a live Python client on a compact mesh (against the rule) still gets its responses in headers", async () => {
    const svc = `compact-py-${newId()}`;
    await startEcho(svc, "compact");
    const peer = await startPythonPeer({
      script: pythonPeerScript("nuropb_peer.py"),
      config: { amqp_url: url, client: true, services: [] },
    });
    closers.push(() => peer.stop());
    const reply = await peer.call<{ result: unknown; error: unknown }>(
      "request",
      { service: svc, method: "echo", params: { n: 7 } },
      20_000,
    );
    expect(reply.ok ? reply.value : reply.error).toMatchObject({ result: { n: 7 }, error: null });
  }, 60_000);
});

import { readFileSync } from "node:fs";
import { NuropbTransportError } from "@nuropb/protocol";
import type { Transport } from "@nuropb/protocol";
import { createAmqpTransport } from "@nuropb/transport-amqp";
import { createCollector, waitFor, withTimeout } from "@nuropb/transport-testkit";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createTestMesh, mgmtGet, rabbitEnv } from "../src/amqp-helpers.ts";
import type { TestMesh } from "../src/amqp-helpers.ts";

const T = 10_000;
const env = rabbitEnv();
let mesh: TestMesh;
let amqpsUrl: string;
const open: Transport[] = [];

beforeEach(async () => {
  mesh = await createTestMesh("tls");
  amqpsUrl = `${env.amqpsUrl}/${mesh.vhost}`;
});
afterEach(async () => {
  await Promise.allSettled(open.splice(0).map((t) => t.close()));
  await mesh.teardown();
});

function transport(options: Parameters<typeof createAmqpTransport>[0]): Transport {
  const t = createAmqpTransport(options);
  open.push(t);
  return t;
}

async function roundTrip(t: Transport): Promise<void> {
  const got = createCollector<string>("deliveries");
  await t.consumeService(
    { service: "tls-echo", rpcBindings: [], eventBindings: [], prefetch: 1 },
    async (d) => {
      got.push(new TextDecoder().decode(d.body));
      await d.ack();
    },
  );
  await t.send(
    { kind: "rpc", service: "tls-echo" },
    {
      headers: { nuropb_type: "request" },
      body: new TextEncoder().encode("over tls"),
      correlationId: "c1",
    },
  );
  await got.waitForItem((x) => x === "over tls", T);
}

describe("TLS (amqps)", () => {
  it("connects with the throwaway CA and verification on, and moves messages", async () => {
    const t = transport({ url: amqpsUrl, tls: { caFile: env.amqpCaFile, verify: true } });
    await withTimeout(t.connect(), T, "connect() over TLS");
    await roundTrip(t);
  });

  it("accepts the CA as PEM text and presents a client certificate", async () => {
    const name = `tls-client-cert-${mesh.vhost}`;
    const t = transport({
      url: amqpsUrl,
      connectionName: name,
      tls: {
        ca: readFileSync(env.amqpCaFile, "utf8"),
        cert: readFileSync(env.amqpClientCertFile),
        key: readFileSync(env.amqpClientKeyFile),
      },
    });
    await t.connect();
    let conn: { ssl?: boolean; peer_cert_subject?: string } | undefined;
    await waitFor(
      async () => {
        const list =
          (await mgmtGet<
            { user_provided_name?: string; ssl?: boolean; peer_cert_subject?: string }[]
          >("/connections?columns=user_provided_name,ssl,peer_cert_subject")) ?? [];
        conn = list.find((c) => c.user_provided_name === name);
        return conn !== undefined;
      },
      T * 2,
      "the connection to show in the management API",
    );
    expect(conn?.ssl).toBe(true);
    expect(conn?.peer_cert_subject).toContain("nuropb-test-client");
    await roundTrip(t);
  });

  it("with verification on and no CA, connect() fails at once with a clear TLS error", async () => {
    const t = transport({ url: amqpsUrl, connectTimeoutMs: 120_000 });
    const err = await withTimeout(
      t.connect().then(
        () => undefined,
        (e: unknown) => e,
      ),
      T,
      "connect() to fail without retrying",
    );
    expect(err).toBeInstanceOf(NuropbTransportError);
    expect(String((err as Error).message)).toMatch(
      /TLS connection to amqps:\/\/guest:\*\*\*\*@localhost:\d+\/tls-.*certificate/,
    );
    expect(t.state).toBe("idle");
  });

  it("with verification off, connects without a CA (Python's default)", async () => {
    const t = transport({ url: amqpsUrl, tls: { verify: false } });
    await withTimeout(t.connect(), T, "connect() without verification");
    await roundTrip(t);
  });

  it("a settings object with tls: true and a CA file connects too", async () => {
    const port = Number(new URL(env.amqpsUrl).port);
    const t = transport({
      url: { host: "localhost", port, vhost: mesh.vhost, tls: true },
      tls: { caFile: env.amqpCaFile },
    });
    await withTimeout(t.connect(), T, "connect() over TLS from settings");
    expect(t.mesh).toBe(mesh.vhost);
  });
});

import { createService, publishToMesh, type MeshService, type RequestContext } from "@nuropb/core";
import { createServiceKeys } from "@nuropb/crypto";
import { NuropbValidationError, type Transport } from "@nuropb/protocol";
import { createAmqpTransport, createVhost, teardownMesh } from "@nuropb/transport-amqp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createTestMesh,
  getQueue,
  rabbitEnv,
  uniqueVhost,
  type TestMesh,
} from "../src/amqp-helpers.ts";
import { cli, closedPort, eventually, spawnCli, startCli } from "../src/cli-harness.ts";

// The `nuropb` command against the private RabbitMQ, with a live TypeScript service on the mesh.

interface Received {
  readonly kind: "command" | "event";
  readonly value: unknown;
}

class Orders {
  readonly #received: Received[] = [];
  #waiters: (() => void)[] = [];

  @publishToMesh({
    description: "Echoes its params",
    params: { type: "object", required: ["id"], properties: { id: { type: "integer" } } },
  })
  echo(params: { id: number }, ctx: RequestContext) {
    return { id: params.id, context: ctx.context, traceId: ctx.traceId, encrypted: ctx.encrypted };
  }

  fail(): never {
    throw new NuropbValidationError("order 7 does not exist");
  }

  @publishToMesh({
    authorize: (token) => token === "Bearer ok" && { user: "ann" },
    requiresEncryption: true,
    description: "Needs a token and encryption",
  })
  secret(_params: Record<string, never>, ctx: RequestContext) {
    return { user: (ctx.userClaims as { user: string }).user, encrypted: ctx.encrypted };
  }

  record(params: Record<string, unknown>): void {
    this.#note({ kind: "command", value: params });
  }

  handleEvent(event: { topic: string; event: unknown; context: unknown }): void {
    this.#note({ kind: "event", value: event });
  }

  #note(r: Received): void {
    this.#received.push(r);
    for (const w of this.#waiters.splice(0)) w();
  }

  /** The next thing received (fails after 10 s). */
  async _next(): Promise<Received> {
    if (this.#received.length === 0) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("nothing received within 10 s")), 10_000);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.#received.shift() as Received;
  }
}

let mesh: TestMesh;
let transport: Transport;
let service: MeshService;
const orders = new Orders();

beforeAll(async () => {
  mesh = await createTestMesh("cli");
  transport = createAmqpTransport({ url: mesh.url });
  service = createService({
    transport,
    name: "orders",
    instance: orders,
    keys: createServiceKeys(),
    serviceVersion: "2.0.1",
    eventBindings: ["orders.#"],
  });
  await service.connect();
});

afterAll(async () => {
  await service?.disconnect();
  await transport?.close();
  await mesh?.teardown();
});

const url = (): string[] => ["--url", mesh.url];

describe("call and command", () => {
  it("call prints the result as JSON, exit 0", async () => {
    const r = await cli([
      "call",
      "orders",
      "echo",
      '{"id":7}',
      "--context",
      '{"u":"x"}',
      "--trace-id",
      "t-1",
      ...url(),
    ]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      id: 7,
      context: { u: "x" },
      traceId: "t-1",
      encrypted: false,
    });
  });

  it("call takes the URL from NUROPB_AMQP_URL", async () => {
    const r = await cli(["call", "orders", "echo", '{"id":1}'], { NUROPB_AMQP_URL: mesh.url });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ id: 1 });
  });

  it("a remote error prints its class and description, exit 3", async () => {
    const r = await cli(["call", "orders", "fail", ...url()]);
    expect(r.code).toBe(3);
    expect(r.stdout).toBe("");
    expect(r.stderr.split("\n")[0]).toBe("NuropbValidationError: order 7 does not exist");
    const invalid = await cli(["call", "orders", "echo", '{"id":"x"}', ...url()]);
    expect(invalid.code).toBe(3);
    expect(invalid.stderr).toMatch(/^NuropbValidationError: invalid params for orders\.echo/);
  });

  it("--encrypted calls a method that requires encryption; without it the service refuses (3)", async () => {
    const auth = ["--context", '{"Authorization":"Bearer ok"}'];
    const sealed = await cli(["call", "orders", "secret", ...auth, "--encrypted", ...url()]);
    expect(sealed.stderr).toBe("");
    expect(sealed.code).toBe(0);
    expect(JSON.parse(sealed.stdout)).toEqual({ user: "ann", encrypted: true });
    const plain = await cli(["call", "orders", "secret", ...auth, ...url()]);
    expect(plain.code).toBe(3);
    expect(plain.stderr).toBe(
      "NuropbAuthorizationError: orders.secret requires an encrypted call\nhint: add --encrypted\n",
    );
  });

  it("an unknown service is not delivered, exit 4", async () => {
    for (const kind of ["call", "command"]) {
      const r = await cli([kind, "no-such-service", "echo", ...url()]);
      expect(r.code).toBe(4);
      expect(r.stderr.split("\n")[0]).toBe(
        "NuropbNotDeliveredError: Service no-such-service not available. unable to call method echo",
      );
    }
  });

  it("bad JSON is a usage error, exit 2, and nothing is sent", async () => {
    const r = await cli(["call", "orders", "echo", "{id: 7}", ...url()]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^error: params is not valid JSON/);
    const bad = await cli(["command", "orders", "record", "{not: json}", ...url()]);
    expect(bad.code).toBe(2);
    // The next thing the service receives is the marker sent after: the bad one never left.
    const ok = await cli(["command", "orders", "record", '{"marker": true}', ...url()]);
    expect(ok.code).toBe(0);
    expect(await orders._next()).toEqual({ kind: "command", value: { marker: true } });
  });

  it("an unreachable broker is a transport error, exit 4, without the password", async () => {
    const port = await closedPort();
    const r = await cli([
      "call",
      "orders",
      "echo",
      "--url",
      `amqp://guest:hunter22@127.0.0.1:${port}/nowhere`,
      "--connect-timeout",
      "1000",
    ]);
    expect(r.code).toBe(4);
    expect(r.stderr).toContain(`amqp://guest:****@127.0.0.1:${port}/nowhere`);
    expect(r.stderr).not.toContain("hunter22");
    const mgmt = await cli([
      "services",
      "--url",
      `amqp://guest:hunter22@127.0.0.1:${port}/nowhere`,
    ]);
    expect(mgmt.code).toBe(4);
    expect(mgmt.stderr).toMatch(
      /^error: cannot reach the management API at http:\/\/guest:\*\*\*\*@/,
    );
    expect(mgmt.stderr).not.toContain("hunter22");
  });

  it("command sends without a result, exit 0, and the service gets it", async () => {
    const r = await cli(["command", "orders", "record", '{"n":1}', ...url()]);
    expect(r).toEqual({ code: 0, stdout: "", stderr: "command sent to orders.record\n" });
    expect(await orders._next()).toEqual({ kind: "command", value: { n: 1 } });
  });
});

describe("publish and listen", () => {
  it("publish reaches the bound service, exit 0", async () => {
    const r = await cli([
      "publish",
      "orders.created",
      '{"id":9}',
      "--context",
      '{"u":"x"}',
      ...url(),
    ]);
    expect(r).toEqual({ code: 0, stdout: "", stderr: "event published to orders.created\n" });
    const got = await orders._next();
    expect(got.kind).toBe("event");
    expect(got.value).toMatchObject({
      topic: "orders.created",
      event: { id: 9 },
      context: { u: "x" },
    });
  });

  it("listen --json prints an event published while it listens, and leaves no queue behind", async () => {
    const listen = startCli(["listen", "orders.#", "--json", "--count", "1", ...url()]);
    await listen.stderrContains("Ctrl-C to stop");
    const queue = /\(queue (nuropb-cli-listen-[0-9a-f]+)\)/.exec(listen.stderr())?.[1] ?? "";
    expect(await getQueue(mesh.vhost, queue)).toMatchObject({
      exclusive: true,
      auto_delete: true,
      durable: false,
    });
    const pub = await cli([
      "publish",
      "orders.shipped",
      '{"id":3}',
      "--trace-id",
      "tr-9",
      ...url(),
    ]);
    expect(pub.code).toBe(0);
    const r = await listen.done;
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0] ?? "")).toMatchObject({
      topic: "orders.shipped",
      event: { id: 3 },
      trace_id: "tr-9",
      context: {},
      target: null,
    });
    await eventually(
      "the listen queue to go",
      async () => (await getQueue(mesh.vhost, queue)) === null,
    );
    // The service got its own copy.
    expect((await orders._next()).value).toMatchObject({ topic: "orders.shipped" });
  });

  it("listen prints readable lines until interrupted, then exits 0", async () => {
    const controller = new AbortController();
    const listen = startCli(["listen", "*.counted", ...url()], { signal: controller.signal });
    await listen.stderrContains("Ctrl-C to stop");
    expect((await cli(["publish", "stock.counted", "42", ...url()])).code).toBe(0);
    expect((await cli(["publish", "orders.created", '{"skip":true}', ...url()])).code).toBe(0);
    expect((await cli(["publish", "cars.counted", '"many"', ...url()])).code).toBe(0);
    await listen.stdoutContains('cars.counted  "many"');
    controller.abort();
    const r = await listen.done;
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split("\n");
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^\d\d:\d\d:\d\d\.\d{3} {2}stock\.counted {2}42 {2}trace [0-9a-f]+$/);
    expect(lines[1]).toMatch(
      /^\d\d:\d\d:\d\d\.\d{3} {2}cars\.counted {2}"many" {2}trace [0-9a-f]+$/,
    );
    expect(r.stderr).toContain("2 event(s)");
    // orders.# gave the service orders.created.
    expect((await orders._next()).value).toMatchObject({ topic: "orders.created" });
  });

  it("listen on a mesh without the events exchange says to set it up, exit 4", async () => {
    const vhost = uniqueVhost("cli-bare");
    await createVhost(rabbitEnv().amqpMgmtUrl, vhost);
    try {
      const r = await cli(["listen", "#", "--url", `${rabbitEnv().amqpUrl}/${vhost}`]);
      expect(r.code).toBe(4);
      expect(r.stderr).toBe(
        `error: there is no events exchange 'nuropb-events-exchange' on mesh ${vhost}\nhint: \`nuropb mesh setup\` creates it\n`,
      );
    } finally {
      await teardownMesh({ url: `${rabbitEnv().amqpUrl}/${vhost}` });
    }
  });
});

describe("services and describe", () => {
  it("services lists the live service with its instance", async () => {
    await eventually("the management API to count the consumer", async () => {
      const r = await cli(["services", "--json", ...url()]);
      const list = JSON.parse(r.stdout) as { service: string; consumers: number }[];
      return list.some((s) => s.service === "orders" && s.consumers === 1);
    });
    const r = await cli(["services", ...url()]);
    expect(r.code).toBe(0);
    expect(r.stdout.split("\n")[0]).toBe("SERVICE  INSTANCES  READY  UNACKED");
    expect(r.stdout).toMatch(/^orders {3}1 {10}\d+ {6}\d+$/m);
  });

  it("services on an empty mesh says so; on a missing one it says how to create it (4)", async () => {
    const empty = await createTestMesh("cli-empty");
    try {
      const r = await cli(["services", "--url", empty.url]);
      expect(r).toEqual({ code: 0, stdout: "", stderr: `no services on mesh ${empty.vhost}\n` });
    } finally {
      await empty.teardown();
    }
    const missing = await cli([
      "services",
      "--url",
      `${rabbitEnv().amqpUrl}/${uniqueVhost("cli-none")}`,
    ]);
    expect(missing.code).toBe(4);
    expect(missing.stderr).toMatch(
      /^error: there is no mesh \(vhost\) 'cli-none-[0-9a-f]+' at .*\nhint: `nuropb mesh setup` creates it\n$/,
    );
  });

  it("describe shows methods, parameters and the auth and encryption flags", async () => {
    const r = await cli(["describe", "orders", ...url()]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout.split("\n")).toEqual([
      "orders v2.0.1",
      "  encryption: public keys RSA and nacl, some methods require it",
      "",
      "METHOD  PARAMETERS   AUTH  ENCRYPTED  DESCRIPTION",
      "echo    id: integer  no    no         Echoes its params",
      "fail    any          no    no",
      "record  any          no    no",
      "secret  any          yes   yes        Needs a token and encryption",
      "",
    ]);
    const json = await cli(["describe", "orders", "--json", ...url()]);
    expect(JSON.parse(json.stdout)).toMatchObject({
      service_name: "orders",
      methods: { secret: { requires_encryption: true, requires_authorization: true } },
    });
    const missing = await cli(["describe", "nobody", ...url()]);
    expect(missing.code).toBe(4);
  });
});

describe("mesh setup and teardown", () => {
  it("setup creates a mesh and is idempotent; teardown removes it", async () => {
    const vhost = uniqueVhost("cli-mesh");
    const meshUrl = ["--url", `${rabbitEnv().amqpUrl}/${vhost}`];
    try {
      const first = await cli(["mesh", "setup", ...meshUrl]);
      expect(first.stderr).toBe("");
      expect(first.code).toBe(0);
      expect(first.stdout).toBe(
        [
          `mesh ${vhost}: vhost created`,
          "  declared  exchange:nuropb-dl-exchange",
          "  declared  queue:nuropb-dl-queue",
          "  declared  exchange:nuropb-events-exchange",
          "  declared  exchange:nuropb-rpc-exchange",
          "",
        ].join("\n"),
      );
      const second = await cli(["mesh", "setup", ...meshUrl]);
      expect(second.code).toBe(0);
      expect(second.stdout).toBe(
        [
          `mesh ${vhost}: vhost already there`,
          "  exists    exchange:nuropb-dl-exchange",
          "  exists    queue:nuropb-dl-queue",
          "  exists    exchange:nuropb-events-exchange",
          "  exists    exchange:nuropb-rpc-exchange",
          "",
        ].join("\n"),
      );
      const refused = await cli(["mesh", "teardown", ...meshUrl]);
      expect(refused.code).toBe(2);
      const down = await cli(["mesh", "teardown", "--yes", ...meshUrl]);
      expect(down).toEqual({ code: 0, stdout: `mesh ${vhost}: vhost deleted\n`, stderr: "" });
      const again = await cli(["mesh", "teardown", "--yes", ...meshUrl]);
      expect(again.stdout).toBe(`mesh ${vhost}: no such vhost, nothing to delete\n`);
    } finally {
      await teardownMesh({ url: `${rabbitEnv().amqpUrl}/${vhost}` });
    }
  });
});

describe("the real binary", () => {
  it("runs call and exits with its code", async () => {
    const r = await spawnCli(["call", "orders", "echo", '{"id":5}'], { NUROPB_AMQP_URL: mesh.url })
      .done;
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ id: 5 });
    const remote = await spawnCli(["call", "orders", "fail", "--url", mesh.url]).done;
    expect(remote.code).toBe(3);
    expect(remote.stderr.split("\n")[0]).toBe("NuropbValidationError: order 7 does not exist");
  });

  it("listen stops cleanly on SIGINT (exit 0)", async () => {
    const listen = spawnCli(["listen", "orders.#", "--url", mesh.url]);
    await listen.stderrContains("Ctrl-C to stop");
    listen.kill("SIGINT");
    const r = await listen.done;
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("");
  });
});

import { createService, publishToMesh, type MeshService, type RequestContext } from "@nuropb/core";
import { createServiceKeys } from "@nuropb/crypto";
import { NuropbTransportError, NuropbValidationError } from "@nuropb/protocol";
import { createMemoryHub, createMemoryTransport, type MemoryHub } from "@nuropb/transport-memory";
import { Writable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { run, type CliIo } from "../src/index.ts";
import { capture } from "./helpers.ts";
import { formatEventJson } from "../src/format.ts";

// `call`, `command`, `publish` and `describe` in-process against a service on the memory transport
// (the CLI is handed a memory transport instead of RabbitMQ); nothing here reaches a network.

const URL = "amqp://guest:hunter22@rabbit.invalid:5672/nuropb";
const KEYS = createServiceKeys();

interface Received {
  readonly kind: "command" | "event";
  readonly value: unknown;
}

class Orders {
  readonly received: Received[] = [];
  #release: () => void = () => {};
  #onHang: () => void = () => {};
  #waiters: (() => void)[] = [];

  @publishToMesh({
    description: "Echoes its params",
    params: { type: "object", properties: { id: { type: "integer" } } },
  })
  echo(params: Record<string, unknown>, ctx: RequestContext) {
    return { params, context: ctx.context, traceId: ctx.traceId, encrypted: ctx.encrypted };
  }

  fail(): never {
    throw new NuropbValidationError("order 7 does not exist");
  }

  crash(): never {
    throw new Error("boom");
  }

  @publishToMesh({
    authorize: (token) => token === "Bearer ok" && { user: "ann" },
    requiresEncryption: true,
  })
  secret(_params: Record<string, never>, ctx: RequestContext) {
    return { user: (ctx.userClaims as { user: string }).user, encrypted: ctx.encrypted };
  }

  record(params: Record<string, unknown>): void {
    this.#note({ kind: "command", value: params });
  }

  /** Answers only when the test lets it (for timeouts and interrupts). */
  async hang(): Promise<string> {
    this.#onHang();
    await new Promise<void>((resolve) => (this.#release = resolve));
    return "late";
  }

  _release(): void {
    this.#release();
  }

  /** Resolves when `hang` is running. */
  _whenHanging(): Promise<void> {
    return new Promise((resolve) => (this.#onHang = resolve));
  }

  handleEvent(event: { topic: string; event: unknown; context: unknown }): void {
    this.#note({ kind: "event", value: event });
  }

  #note(r: Received): void {
    this.received.push(r);
    for (const w of this.#waiters.splice(0)) w();
  }

  /** Resolves once something was received (fails the test after 5 s). */
  async _nextReceived(): Promise<Received> {
    if (this.received.length === 0) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("nothing received within 5 s")), 5_000);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.received.shift() as Received;
  }
}

let hub: MemoryHub;
let orders: Orders;
let service: MeshService;

beforeEach(async () => {
  hub = createMemoryHub();
  orders = new Orders();
  service = createService({
    transport: createMemoryTransport({ hub }),
    name: "orders",
    instance: orders,
    keys: KEYS,
    serviceVersion: "2.0.1",
    eventBindings: ["orders.#"],
    drainTimeoutMs: 1_000,
  });
  await service.connect();
});

afterEach(async () => {
  orders._release();
  await service.disconnect();
});

async function cli(argv: string[], io: Partial<CliIo> = {}) {
  const c = capture(io);
  const code = await run([...argv, "--url", URL], c.io, {
    createTransport: () => createMemoryTransport({ hub }),
  });
  return { code, stdout: c.stdout(), stderr: c.stderr() };
}

describe("call", () => {
  it("prints the result as JSON and exits 0", async () => {
    const r = await cli([
      "call",
      "orders",
      "echo",
      '{"id":7}',
      "--context",
      '{"user":"ann"}',
      "--trace-id",
      "trace-1",
    ]);
    expect(r).toEqual({
      code: 0,
      stdout: `${JSON.stringify(
        { params: { id: 7 }, context: { user: "ann" }, traceId: "trace-1", encrypted: false },
        null,
        2,
      )}\n`,
      stderr: "",
    });
  });

  it("keeps integers beyond 2^53 exact both ways (params in, result out)", async () => {
    const r = await cli([
      "call",
      "orders",
      "echo",
      '{"id":9223372036854775807,"n":[-9007199254740993]}',
    ]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('"id": 9223372036854775807,');
    expect(r.stdout).toContain("-9007199254740993");
    const listened = formatEventJson({
      topic: "t",
      event: { id: 9223372036854775807n },
      context: {},
      traceId: null,
      target: null,
      receivedAt: new Date(0),
    });
    expect(listened).toContain('{"id":9223372036854775807}');
  });

  it("prints a service's error as its class and description and exits 3", async () => {
    const r = await cli(["call", "orders", "fail"]);
    expect(r.code).toBe(3);
    expect(r.stdout).toBe("");
    expect(r.stderr).toBe(
      "NuropbValidationError: order 7 does not exist\nhint: `nuropb describe <service>` shows the parameters each method takes\n",
    );
    const crash = await cli(["call", "orders", "crash"]);
    expect(crash.code).toBe(3);
    expect(crash.stderr).toBe(
      "NuropbException: Runtime exception calling orders.crash:Error: boom\n",
    );
    const invalid = await cli(["call", "orders", "echo", '{"id":"seven"}']);
    expect(invalid.code).toBe(3);
    expect(invalid.stderr).toMatch(/^NuropbValidationError: invalid params for orders\.echo/);
  });

  it("calls methods that require encryption with --encrypted, and hints at it without", async () => {
    const auth = ["--context", '{"Authorization":"Bearer ok"}'];
    const plain = await cli(["call", "orders", "secret", ...auth]);
    expect(plain.code).toBe(3);
    expect(plain.stderr).toBe(
      "NuropbAuthorizationError: orders.secret requires an encrypted call\nhint: add --encrypted\n",
    );
    const sealed = await cli(["call", "orders", "secret", ...auth, "--encrypted"]);
    expect(sealed.code).toBe(0);
    expect(JSON.parse(sealed.stdout)).toEqual({ user: "ann", encrypted: true });
    const noToken = await cli(["call", "orders", "secret", "--encrypted"]);
    expect(noToken.code).toBe(3);
    expect(noToken.stderr).toContain("NuropbAuthenticationError: orders.secret needs a token");
    expect(noToken.stderr).toContain(`hint: pass a token: --context '{"Authorization"`);
  });

  it("exits 4 when no service is there (not delivered)", async () => {
    const r = await cli(["call", "nobody", "echo"]);
    expect(r.code).toBe(4);
    expect(r.stderr).toBe(
      "NuropbNotDeliveredError: Service nobody not available. unable to call method echo\n" +
        "hint: no service is bound for that name; `nuropb services` lists the mesh\n",
    );
  });

  it("exits 4 when no answer comes within --ttl", async () => {
    const r = await cli(["call", "orders", "hang", "--ttl", "50"]);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/^NuropbTimeoutError: no response from orders\.hang within 50 ms\n/);
  });

  it("exits 130 when interrupted while waiting", async () => {
    const controller = new AbortController();
    const hanging = orders._whenHanging();
    const pending = cli(["call", "orders", "hang"], { signal: controller.signal });
    await hanging;
    controller.abort();
    const r = await pending;
    expect(r.code).toBe(130);
    expect(r.stderr).toBe("interrupted\n");
  });

  it("exits 4 without echoing the password when the broker cannot be reached", async () => {
    const c = capture();
    const code = await run(["call", "orders", "echo", "--url", URL], c.io, {
      createTransport: () => {
        const t = createMemoryTransport({ hub });
        t.connect = () =>
          Promise.reject(
            new NuropbTransportError(`refused by amqp://guest:hunter22@rabbit.invalid (hunter22)`),
          );
        return t;
      },
    });
    expect(code).toBe(4);
    expect(c.stderr()).toBe(
      "error: cannot connect to amqp://guest:****@rabbit.invalid:5672/nuropb: refused by amqp://guest:****@rabbit.invalid (****)\n" +
        "hint: is RabbitMQ running there? check the URL, the credentials and the vhost (`nuropb mesh setup` creates it)\n",
    );
  });
});

describe("transport options", () => {
  it("exits 2 with the transport's message, without the password, when it refuses its options", async () => {
    const c = capture();
    const code = await run(["call", "orders", "echo", "--url", URL], c.io, {
      createTransport: () => {
        throw new TypeError("url parameter frob is bad: amqp://guest:hunter22@rabbit.invalid");
      },
    });
    expect(code).toBe(2);
    expect(c.stderr()).toBe("error: url parameter frob is bad: amqp://guest:****@rabbit.invalid\n");
  });
});

describe("spinner", () => {
  it("spins on the terminal's stderr while waiting, never on stdout", async () => {
    const spun: string[] = [];
    const stream = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        spun.push(chunk.toString());
        callback();
      },
    });
    // What ora needs of a terminal stream.
    Object.assign(stream, {
      isTTY: true,
      columns: 80,
      cursorTo: () => true,
      clearLine: () => true,
      moveCursor: () => true,
    });
    const r = await cli(["call", "orders", "echo", '{"id":1}'], {
      stderrIsTTY: true,
      spinnerStream: stream,
    });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ params: { id: 1 } });
    const drawn = spun.join("");
    expect(drawn).toContain("connecting to amqp://guest:****@rabbit.invalid:5672/nuropb");
    expect(drawn).toContain("calling orders.echo");
    expect(drawn).not.toContain("hunter22");
    expect(r.stderr).toBe("");
  });

  it("does not spin when stderr is not a terminal", async () => {
    const spun: string[] = [];
    const stream = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        spun.push(chunk.toString());
        callback();
      },
    });
    const r = await cli(["call", "orders", "echo"], { spinnerStream: stream });
    expect(r.code).toBe(0);
    expect(spun).toEqual([]);
  });
});

describe("command and publish", () => {
  it("sends a command (no result) and exits 0", async () => {
    const r = await cli(["command", "orders", "record", '{"n":1}']);
    expect(r).toEqual({ code: 0, stdout: "", stderr: "command sent to orders.record\n" });
    expect(await orders._nextReceived()).toEqual({ kind: "command", value: { n: 1 } });
    const lost = await cli(["command", "nobody", "record"]);
    expect(lost.code).toBe(4);
    expect(lost.stderr).toContain("NuropbNotDeliveredError");
  });

  it("publishes an event with its context", async () => {
    const r = await cli(["publish", "orders.created", '{"id":9}', "--context", '{"u":"x"}']);
    expect(r).toEqual({ code: 0, stdout: "", stderr: "event published to orders.created\n" });
    const got = await orders._nextReceived();
    expect(got.kind).toBe("event");
    expect(got.value).toMatchObject({
      topic: "orders.created",
      event: { id: 9 },
      context: { u: "x" },
    });
    const scalar = await cli(["publish", "orders.counted", "42"]);
    expect(scalar.code).toBe(0);
    expect((await orders._nextReceived()).value).toMatchObject({ event: 42 });
  });
});

describe("describe", () => {
  it("prints methods with parameters and flags", async () => {
    const r = await cli(["describe", "orders"]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe("");
    const lines = r.stdout.split("\n");
    expect(lines[0]).toBe("orders v2.0.1");
    expect(lines[1]).toBe("  encryption: public keys RSA and nacl, some methods require it");
    expect(lines.slice(3)).toEqual([
      "METHOD  PARAMETERS    AUTH  ENCRYPTED  DESCRIPTION",
      "crash   any           no    no",
      "echo    id?: integer  no    no         Echoes its params",
      "fail    any           no    no",
      "hang    any           no    no",
      "record  any           no    no",
      "secret  any           yes   yes",
      "",
    ]);
  });

  it("prints the description as JSON with --json", async () => {
    const r = await cli(["describe", "orders", "--json"]);
    expect(r.code).toBe(0);
    const d = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(d).toMatchObject({
      service_name: "orders",
      service_version: "2.0.1",
      encrypted_methods: true,
      methods: { secret: { requires_encryption: true, requires_authorization: true } },
    });
    expect(d.public_key).toMatch(/^-----BEGIN PUBLIC KEY-----/);
  });

  it("exits 4 for a service that is not there", async () => {
    const r = await cli(["describe", "nobody"]);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/^NuropbNotDeliveredError: /);
  });
});

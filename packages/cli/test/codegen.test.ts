import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { createClient, createService } from "@nuropb/core";
import type { MeshClient, MeshService } from "@nuropb/core";
import { decodeFrame, encodePayload } from "@nuropb/protocol";
import type { Listener, Transport } from "@nuropb/protocol";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import { afterAll, beforeAll, expect, it } from "vitest";
import { run } from "../src/index.ts";
import { generateModule } from "../src/commands/codegen.ts";
import { capture } from "./helpers.ts";

// `nuropb codegen` against a TS service and a Python-shaped one on the memory transport; the
// module it writes is type-checked with tsc and then imported and called.

const URL = "amqp://guest:guest@rabbit.invalid:5672/nuropb";
const here = dirname(fileURLToPath(import.meta.url));
const hub = createMemoryHub();
const transports: Transport[] = [];
const transport = (): Transport => {
  const t = createMemoryTransport({ hub });
  transports.push(t);
  return t;
};

const ADDRESS = {
  title: "Address",
  type: "object",
  required: ["city"],
  properties: { city: { type: "string" }, zip: { type: "string" } },
};

const orders = {
  getOrder: (params: { id: string }) => ({
    id: params.id,
    lines: [{ sku: "a", qty: 2 }],
    shipTo: { city: "Oslo" },
  }),
  add: (params: { a: number; b: number }) => params.a + params.b,
  "list-all": () => ["1", "2"],
  handleEvent: () => undefined,
};

/** What a Python NuroPb service answers `nuropb_describe` with: `properties` as pairs. */
const PYTHON_DESCRIPTION = {
  service_name: "py_orders",
  service_version: "0.1.8",
  description: "A Python service",
  warnings: [],
  encrypted_methods: false,
  public_key: null,
  methods: {
    get_orders: {
      description: "Orders since a date */ with a comment end",
      requires_encryption: false,
      parameters: {
        type: "object",
        properties: [
          ["order_date", { type: "datetime", description: "", default: "" }],
          ["account", { type: "str", description: "", default: null }],
          ["limit", { type: "int", description: "", default: 10 }],
        ],
        required: ["order_date"],
      },
    },
  },
};

let service: MeshService;
let python: Listener;
let client: MeshClient;
let dir: string;

/** Answers like a Python service over a bare transport: its describe, else its params echoed. */
async function servePython(t: Transport): Promise<Listener> {
  await t.connect();
  return t.consumeService(
    { service: "py_orders", rpcBindings: [], eventBindings: [], prefetch: 8 },
    async (delivery) => {
      const msg = decodeFrame(delivery);
      await delivery.ack();
      if (msg.type !== "request" || delivery.replyTo === undefined) return;
      const result =
        msg.payload.method === "nuropb_describe"
          ? PYTHON_DESCRIPTION
          : { echoed: msg.payload.params };
      await t.send(
        { kind: "reply", address: delivery.replyTo },
        encodePayload({
          tag: "response",
          result,
          error: null,
          correlation_id: msg.correlationId,
          trace_id: msg.traceId,
          context: {},
          warning: null,
          reply_to: delivery.replyTo,
        } as never),
      );
    },
  );
}

beforeAll(async () => {
  service = createService({
    transport: transport(),
    name: "orders",
    instance: orders,
    serviceVersion: "1.2.0",
    description: "Orders",
    methods: {
      getOrder: {
        description: "Reads one order",
        params: {
          type: "object",
          required: ["id"],
          properties: { id: { type: "string" } },
          additionalProperties: false,
        },
        result: {
          type: "object",
          required: ["id", "lines", "shipTo"],
          properties: {
            id: { type: "string" },
            lines: {
              type: "array",
              items: { $ref: "#/$defs/line" },
            },
            shipTo: ADDRESS,
            billTo: { $ref: "https://schemas.invalid/address.json" },
          },
          $defs: {
            line: {
              type: "object",
              required: ["sku", "qty"],
              properties: { sku: { type: "string" }, qty: { type: "integer" } },
              additionalProperties: false,
            },
          },
        },
      },
      add: {
        params: {
          type: "object",
          required: ["a", "b"],
          properties: { a: { type: "number" }, b: { type: "number" } },
          additionalProperties: false,
        },
        result: { type: "number" },
      },
      "list-all": { result: { type: "array", items: { type: "string" } } },
    },
  });
  await service.connect();
  python = await servePython(transport());
  client = createClient({ transport: transport() });
  await client.connect();
  dir = mkdtempSync(join(here, ".codegen-"));
});

afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await client.disconnect();
  await python.stop();
  await service.disconnect();
  for (const t of transports) await t.close();
});

it("writes a module that type-checks, whose types bite, and whose proxies call the services", async () => {
  const file = join(dir, "mesh.generated.ts");
  const out = capture({ env: { NUROPB_AMQP_URL: URL } });
  const code = await run(["codegen", "orders", "py_orders", "--out", file], out.io, {
    createTransport: () => transport(),
  });
  expect(out.stderr()).toContain(
    'left out the external $ref "https://schemas.invalid/address.json"',
  );
  expect(code).toBe(0);
  const source = readFileSync(file, "utf8");
  expect(source).toContain("export interface Orders {");
  expect(source).toContain("export interface PyOrders {");
  expect(source).toContain(
    '"list-all"(params: OrdersListAllParams): Promise<OrdersListAllResult>;',
  );
  expect(source).toContain("order_date: string;");
  expect(source).not.toMatch(/\*\/ with a comment end/);

  // A user of the module: right calls compile, wrong ones are errors tsc must report.
  writeFileSync(
    join(dir, "use.ts"),
    `import type { MeshClient } from "@nuropb/core";
import { ordersProxy, pyOrdersProxy, type Orders, type OrdersGetOrderResult } from "./mesh.generated.ts";

export async function use(client: MeshClient): Promise<[OrdersGetOrderResult, number, string[], unknown]> {
  const orders = ordersProxy(client);
  const order = await orders.getOrder({ id: "1" });
  const qty: number = order.lines[0]?.qty ?? 0;
  const city: string = order.shipTo.city;
  void [qty, city];
  // Core's own typed proxy takes the generated interface as well.
  const viaCore: number = await client.proxy<Orders>("orders").add({ a: 1, b: 2 });
  const all = await orders["list-all"]({});
  const py = await pyOrdersProxy(client).get_orders({ order_date: "2024-01-01T00:00:00Z", limit: 5 });
  return [order, viaCore, all, py];
}

export async function misuse(client: MeshClient): Promise<void> {
  const orders = ordersProxy(client);
  // @ts-expect-error id must be a string
  await orders.getOrder({ id: 1 });
  // @ts-expect-error unknown params are refused (additionalProperties: false)
  await orders.add({ a: 1, b: 2, c: 3 });
  // @ts-expect-error the result is a number
  const s: string = await orders.add({ a: 1, b: 2 });
  // @ts-expect-error order_date is required
  await pyOrdersProxy(client).get_orders({ limit: 5 });
  void s;
}
`,
  );
  const tsc = join(here, "../../../node_modules/typescript/bin/tsc");
  const args = [
    tsc,
    "--noEmit",
    "--strict",
    "--exactOptionalPropertyTypes",
    "--noUncheckedIndexedAccess",
    "--target",
    "es2022",
    "--module",
    "nodenext",
    "--moduleResolution",
    "nodenext",
    "--allowImportingTsExtensions",
    "--customConditions",
    "@nuropb/source",
    "--lib",
    "es2023,esnext.disposable",
    "--types",
    "node",
    "--skipLibCheck",
    join(dir, "use.ts"),
  ];
  const result = await promisify(execFile)(process.execPath, args, { cwd: dir }).then(
    () => ({ ok: true, output: "" }),
    (err: { stdout?: string; stderr?: string }) => ({
      ok: false,
      output: `${err.stdout ?? ""}${err.stderr ?? ""}`,
    }),
  );
  expect(result.output).toBe("");
  expect(result.ok).toBe(true);

  const generated = (await import(file)) as {
    ordersProxy: (c: MeshClient) => {
      getOrder(p: { id: string }): Promise<unknown>;
      add(p: object): Promise<unknown>;
    };
    pyOrdersProxy: (c: MeshClient) => { get_orders(p: object): Promise<unknown> };
    OrdersServiceName: string;
  };
  expect(generated.OrdersServiceName).toBe("orders");
  expect(await generated.ordersProxy(client).add({ a: 40, b: 2 })).toBe(42);
  expect(await generated.ordersProxy(client).getOrder({ id: "7" })).toMatchObject({ id: "7" });
  expect(await generated.pyOrdersProxy(client).get_orders({ order_date: "2024-01-01" })).toEqual({
    echoed: { order_date: "2024-01-01" },
  });
}, 120_000);

it("prints to standard output without --out, and fails with 4 for a service that is not there", async () => {
  const out = capture({ env: { NUROPB_AMQP_URL: URL } });
  expect(await run(["codegen", "orders"], out.io, { createTransport: () => transport() })).toBe(0);
  expect(out.stdout()).toMatch(/^\/\/ Generated by `nuropb codegen orders`/);
  const missing = capture({ env: { NUROPB_AMQP_URL: URL } });
  expect(await run(["codegen", "nobody"], missing.io, { createTransport: () => transport() })).toBe(
    4,
  );
  expect(missing.stderr()).toContain("NuropbNotDeliveredError");
  const bad = capture({ env: { NUROPB_AMQP_URL: URL } });
  expect(await run(["codegen", "bad name!"], bad.io, { createTransport: () => transport() })).toBe(
    2,
  );
});

it("names stay unique when services and methods map to the same type names", async () => {
  const d = (methods: Record<string, unknown>) =>
    ({
      service_name: "x",
      service_version: null,
      description: null,
      warnings: [],
      encrypted_methods: false,
      public_key: null,
      methods,
    }) as never;
  const m = {
    description: null,
    requires_encryption: false,
    parameters: { type: "object", properties: {} },
  };
  const { source } = await generateModule([
    { name: "a-b", description: d({ get_x: m, "get-x": m }) },
    { name: "a_b", description: d({}) },
  ]);
  expect(source).toContain("export interface ABGetXParams");
  expect(source).toContain("export interface ABGetXParams2");
  expect(source).toContain("export interface AB2 {");
});

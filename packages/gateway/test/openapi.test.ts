import { Validator } from "@seriousme/openapi-schema-validator";
import { afterEach, beforeEach, expect, it } from "vitest";
import { startMesh } from "./mesh.ts";
import type { TestMesh } from "./mesh.ts";
import { PYTHON_DESCRIPTION, servePythonShaped } from "./python-shaped.ts";

let mesh: TestMesh;
beforeEach(async () => {
  mesh = await startMesh();
});
afterEach(async () => {
  await mesh.close();
});

async function validate(doc: unknown): Promise<{ valid: boolean; errors?: unknown }> {
  const validator = new Validator();
  const res = await validator.validate(doc as Record<string, unknown>);
  return { valid: res.valid, errors: res.errors };
}

it("serves an OpenAPI 3.1 document of the exposed methods that a validator accepts", async () => {
  const py = await servePythonShaped(mesh.transport(), "py_orders");
  const gateway = mesh.gateway({
    title: "test gateway",
    expose: {
      services: {
        orders: { requests: ["getOrder", "add"], commands: ["record"] },
        py_orders: { requests: "*" },
        billing: { requests: ["charge"] }, // not on the mesh
      },
      publish: ["orders.*"],
    },
    describeTtlMs: 200,
  });
  await gateway.ready();
  const res = await gateway.server.inject({ method: "GET", url: "/openapi.json" });
  expect(res.statusCode).toBe(200);
  const doc = res.json();
  const verdict = await validate(doc);
  expect(verdict.errors).toBeUndefined();
  expect(verdict.valid).toBe(true);

  expect(doc.openapi).toBe("3.1.0");
  expect(doc.info.title).toBe("test gateway");
  expect(Object.keys(doc.paths).sort()).toEqual([
    "/api/orders/add",
    "/api/orders/getOrder",
    "/api/py_orders/get_orders",
    "/command/orders/record",
    "/publish/{topic}",
  ]);
  const getOrder = doc.paths["/api/orders/getOrder"].post;
  expect(getOrder.summary).toBe("Reads an order");
  expect(getOrder.requestBody.content["application/json"].schema).toEqual({
    type: "object",
    required: ["id"],
    properties: { id: { type: "string" } },
    additionalProperties: false,
  });
  expect(getOrder.responses["200"].content["application/json"].schema).toMatchObject({
    required: ["id", "owner"],
  });
  expect(getOrder.responses["403"]).toEqual({ $ref: "#/components/responses/NuropbError" });
  expect(getOrder.security).toEqual([{ token: [] }]);
  expect(doc.paths["/api/orders/add"].post.security).toEqual([{}, { token: [] }]);
  expect(doc.paths["/command/orders/record"].post.responses["202"]).toBeDefined();
  // The Python service's pairs, normalised into a JSON Schema.
  expect(
    doc.paths["/api/py_orders/get_orders"].post.requestBody.content["application/json"].schema,
  ).toEqual({
    type: "object",
    properties: {
      order_date: { type: "string", format: "date-time", "x-python-type": "datetime" },
      account: { type: "string", default: null, "x-python-type": "str" },
      limit: { type: "integer", default: 10, "x-python-type": "int" },
    },
    required: ["order_date"],
  });
  expect(doc["x-nuropb-unavailable"]).toEqual(["billing"]);
  await py.stop();
});

it("the validator refuses a broken document (so the check above means something)", async () => {
  const gateway = mesh.gateway({ expose: { services: { orders: { requests: ["add"] } } } });
  await gateway.ready();
  const doc = (await gateway.server.inject({ method: "GET", url: "/openapi.json" })).json();
  expect((await validate(doc)).valid).toBe(true);
  const broken = structuredClone(doc);
  broken.paths["/api/orders/add"].post.responses = { "200": { content: {} } }; // no description
  expect((await validate(broken)).valid).toBe(false);
});

it("is live: a method added to the exposure shows once the service describes it", async () => {
  const gateway = mesh.gateway({
    expose: { services: { later: { requests: "*" } } },
    describeCacheMs: 1,
    describeTtlMs: 200,
  });
  await gateway.ready();
  const before = (await gateway.server.inject({ method: "GET", url: "/openapi.json" })).json();
  expect(before.paths).toEqual({});
  const { createService } = await import("@nuropb/core");
  const later = createService({
    transport: mesh.transport(),
    name: "later",
    instance: { ping: () => "pong" },
  });
  await later.connect();
  try {
    const after = (await gateway.server.inject({ method: "GET", url: "/openapi.json" })).json();
    expect(Object.keys(after.paths)).toEqual(["/api/later/ping"]);
  } finally {
    await later.disconnect();
  }
});

it("writes integers beyond 2^53 in a service's schemas exactly", async () => {
  // A Python service may default an `int` to 2^64 - 1; the describe is read with bigints.
  const methods = PYTHON_DESCRIPTION.methods;
  const py = await servePythonShaped(mesh.transport(), "py_counters", {
    ...PYTHON_DESCRIPTION,
    service_name: "py_counters",
    methods: {
      bump: {
        ...methods.get_orders,
        parameters: {
          type: "object",
          properties: [["by", { type: "int", description: "", default: 2n ** 64n - 1n }]],
          required: [],
        },
      },
    },
  });
  try {
    const gateway = mesh.gateway({ expose: { services: { py_counters: { requests: "*" } } } });
    await gateway.ready();
    const res = await gateway.server.inject({ method: "GET", url: "/openapi.json" });
    expect(res.statusCode).toBe(200);
    expect(res.body).toContain('"default":18446744073709551615}');
    expect((await validate(res.json())).valid).toBe(true);
  } finally {
    await py.stop();
  }
});

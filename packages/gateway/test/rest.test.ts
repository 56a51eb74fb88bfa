import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { GatewayAuthorizeRequest } from "../src/index.ts";
import { HTTP_STATUS_BY_ERROR, TRACE_HEADER, TTL_HEADER } from "../src/index.ts";
import { HUGE, startMesh } from "./mesh.ts";
import type { TestMesh } from "./mesh.ts";
import { PYTHON_DESCRIPTION, servePythonShaped } from "./python-shaped.ts";

let mesh: TestMesh;
beforeEach(async () => {
  mesh = await startMesh();
});
afterEach(async () => {
  await mesh.close();
});

const json = { "content-type": "application/json" };

async function exposedGateway(extra: Parameters<TestMesh["gateway"]>[0] = {}) {
  const gateway = mesh.gateway({
    expose: {
      services: {
        orders: {
          requests: ["getOrder", "add", "fail", "create", "whoami", "secret"],
          commands: ["record"],
        },
      },
      publish: ["orders.*"],
    },
    ...extra,
  });
  await gateway.ready();
  return gateway;
}

describe("POST /api/{service}/{method}", () => {
  it("calls the method with the JSON body as params and answers its result", async () => {
    const gateway = await exposedGateway();
    const res = await gateway.server.inject({
      method: "POST",
      url: "/api/orders/add",
      headers: json,
      payload: { a: 2, b: 40 },
    });
    expect(res.statusCode).toBe(200);
    expect(res.headers["content-type"]).toMatch(/^application\/json/);
    expect(res.json()).toBe(42);
    expect(res.headers[TRACE_HEADER]).toMatch(/^[0-9a-f]{32}$/);
  });

  it("puts the Authorization header in the context under the service's token key, and nothing else", async () => {
    const gateway = await exposedGateway();
    const ok = await gateway.server.inject({
      method: "POST",
      url: "/api/orders/getOrder",
      headers: { ...json, authorization: "Bearer ok" },
      payload: { id: "42" },
    });
    expect(ok.statusCode).toBe(200);
    expect(ok.json()).toEqual({ id: "42", owner: "ada" });

    const ctx = await gateway.server.inject({
      method: "POST",
      url: "/api/orders/whoami",
      headers: { ...json, authorization: "Bearer xyz", cookie: "session=1" },
      payload: {},
    });
    expect(ctx.json()).toEqual({ Authorization: "Bearer xyz" });

    const other = mesh.gateway({
      expose: { services: { orders: { requests: ["whoami"], contextTokenKey: "apiToken" } } },
    });
    await other.ready();
    const keyed = await other.server.inject({
      method: "POST",
      url: "/api/orders/whoami",
      headers: { authorization: "k-1" },
    });
    expect(keyed.statusCode).toBe(200);
    expect(keyed.json()).toEqual({ apiToken: "k-1" });
  });

  it("answers errors with their HTTP status and the NuroPb error object", async () => {
    const gateway = await exposedGateway();
    const call = (url: string, payload: unknown, headers: Record<string, string> = {}) =>
      gateway.server.inject({
        method: "POST",
        url,
        headers: { ...json, ...headers },
        payload: payload as object,
      });

    const noToken = await call("/api/orders/getOrder", { id: "1" });
    expect(noToken.statusCode).toBe(401);
    expect(noToken.json()).toEqual({
      error: "NuropbAuthenticationError",
      description: "orders.getOrder needs a token in context['Authorization']",
    });

    const badToken = await call(
      "/api/orders/getOrder",
      { id: "1" },
      { authorization: "Bearer no" },
    );
    expect(badToken.statusCode).toBe(403);
    expect(badToken.json().error).toBe("NuropbAuthorizationError");

    const invalid = await call("/api/orders/add", { a: "x", b: 1 });
    expect(invalid.statusCode).toBe(400);
    expect(invalid.json().error).toBe("NuropbValidationError");

    const failed = await call("/api/orders/fail", {});
    expect(failed.statusCode).toBe(500);
    expect(failed.json()).toEqual({
      error: "NuropbException",
      description: "Runtime exception calling orders.fail:Error: boom",
    });

    const notJson = await gateway.server.inject({
      method: "POST",
      url: "/api/orders/add",
      headers: json,
      payload: "{nope",
    });
    expect(notJson.statusCode).toBe(400);
    expect(notJson.json().error).toBe("NuropbValidationError");

    const array = await call("/api/orders/add", [1, 2]);
    expect(array.statusCode).toBe(400);
    expect(array.json().description).toBe("params must be a JSON object");
  });

  it("answers over a real HTTP connection (the request's body is read before the answer)", async () => {
    const gateway = await exposedGateway();
    const base = await gateway.listen();
    const res = await fetch(`${base}/api/orders/add`, {
      method: "POST",
      headers: json,
      body: JSON.stringify({ a: 40, b: 2 }),
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toBe(42);
  });

  it("refuses what is not exposed with 404, the same as what does not exist", async () => {
    const gateway = await exposedGateway();
    for (const url of [
      "/api/orders/internal", // hidden but callable on the mesh: not listed in requests
      "/api/orders/record", // a command, not a request
      "/api/orders/nope",
      "/api/billing/charge",
    ]) {
      const res = await gateway.server.inject({ method: "POST", url, headers: json, payload: {} });
      expect(res.statusCode, url).toBe(404);
      expect(res.json().error, url).toBe("NuropbHandlingError");
      expect(res.json().description, url).toMatch(/is not exposed by this gateway$/);
    }
    expect(mesh.orders.commands).toEqual([]);
  });

  it("exposes nothing by default", async () => {
    const gateway = mesh.gateway({});
    await gateway.ready();
    const res = await gateway.server.inject({
      method: "POST",
      url: "/api/orders/add",
      headers: json,
      payload: { a: 1, b: 2 },
    });
    expect(res.statusCode).toBe(404);
    const list = await gateway.server.inject({ method: "GET", url: "/api" });
    expect(list.json()).toEqual({ services: [] });
    const pub = await gateway.server.inject({
      method: "POST",
      url: "/publish/orders.created",
      headers: json,
      payload: {},
    });
    expect(pub.statusCode).toBe(403);
  });

  it('"*" exposes the methods the service describes, not its hidden ones', async () => {
    const gateway = mesh.gateway({ expose: { services: { orders: { requests: "*" } } } });
    await gateway.ready();
    const add = await gateway.server.inject({
      method: "POST",
      url: "/api/orders/add",
      headers: json,
      payload: { a: 1, b: 2 },
    });
    expect(add.json()).toBe(3);
    const hidden = await gateway.server.inject({
      method: "POST",
      url: "/api/orders/internal",
      headers: json,
      payload: {},
    });
    expect(hidden.statusCode).toBe(404);
  });

  it("takes the ttl from its header and refuses a bad one", async () => {
    const gateway = await exposedGateway({ maxTtlMs: 60_000 });
    const ok = await gateway.server.inject({
      method: "POST",
      url: "/api/orders/add",
      headers: { ...json, [TTL_HEADER]: "5000", [TRACE_HEADER]: "trace-1" },
      payload: { a: 1, b: 1 },
    });
    expect(ok.statusCode).toBe(200);
    expect(ok.headers[TRACE_HEADER]).toBe("trace-1");
    for (const bad of ["0", "-5", "abc", "60001", "1.5"]) {
      const res = await gateway.server.inject({
        method: "POST",
        url: "/api/orders/add",
        headers: { ...json, [TTL_HEADER]: bad },
        payload: { a: 1, b: 1 },
      });
      expect(res.statusCode, bad).toBe(400);
      expect(res.json().error, bad).toBe("NuropbValidationError");
    }
  });

  it("answers 504 when the service does not answer within the ttl", async () => {
    const gateway = mesh.gateway({ expose: { services: { orders: { requests: ["sleep"] } } } });
    await gateway.ready();
    const res = await gateway.server.inject({
      method: "POST",
      url: "/api/orders/sleep",
      headers: { ...json, [TTL_HEADER]: "50" },
      payload: { ms: 300 },
    });
    expect(res.statusCode).toBe(504);
    expect(res.json().error).toBe("NuropbTimeoutError");
  });

  it("answers 502 when the service answers nuropb_stats with something else", async () => {
    // A peer with a method of that name: it echoes the params, {}.
    const py = await servePythonShaped(mesh.transport(), "py_odd", {
      ...PYTHON_DESCRIPTION,
      service_name: "py_odd",
      methods: {
        ...PYTHON_DESCRIPTION.methods,
        nuropb_stats: PYTHON_DESCRIPTION.methods.get_orders,
      },
    });
    try {
      const gateway = mesh.gateway({ expose: { services: { py_odd: { requests: [] } } } });
      await gateway.ready();
      const res = await gateway.server.inject({ method: "GET", url: "/stats/py_odd" });
      expect(res.statusCode).toBe(502);
      expect(res.json()).toEqual({
        error: "NuropbMessageError",
        description: "py_odd answered nuropb_stats with something else",
      });
    } finally {
      await py.stop();
    }
  });

  it("answers 503 when no service is there", async () => {
    const gateway = mesh.gateway({ expose: { services: { billing: { requests: ["charge"] } } } });
    await gateway.ready();
    const res = await gateway.server.inject({
      method: "POST",
      url: "/api/billing/charge",
      headers: json,
      payload: {},
    });
    expect(res.statusCode).toBe(503);
    expect(res.json().error).toBe("NuropbNotDeliveredError");
  });

  it("refuses a body over bodyLimitBytes with 413", async () => {
    const gateway = await exposedGateway({ bodyLimitBytes: 64 });
    const res = await gateway.server.inject({
      method: "POST",
      url: "/api/orders/add",
      headers: json,
      payload: { a: 1, b: 2, pad: "x".repeat(100) },
    });
    expect(res.statusCode).toBe(413);
    expect(res.json().error).toBe("NuropbMessageError");
  });

  it("keeps integers beyond 2^53 exact both ways", async () => {
    const gateway = mesh.gateway({ expose: { services: { orders: { requests: ["echo"] } } } });
    await gateway.ready();
    const res = await gateway.server.inject({
      method: "POST",
      url: "/api/orders/echo",
      headers: json,
      payload: '{"a": 9007199254740993, "b": 0}',
    });
    expect(res.body).toBe('{"a":9007199254740993,"b":0}');
  });

  it("writes a service's bigints exactly, in its result and in its error's details", async () => {
    const gateway = mesh.gateway({ expose: { services: { orders: { requests: ["huge"] } } } });
    await gateway.ready();
    const ok = await gateway.server.inject({
      method: "POST",
      url: "/api/orders/huge",
      headers: json,
      payload: {},
    });
    expect(ok.statusCode).toBe(200);
    expect(ok.body).toBe(`{"n":${String(HUGE)}}`);
    const failed = await gateway.server.inject({
      method: "POST",
      url: "/api/orders/huge",
      headers: json,
      payload: { fail: true },
    });
    expect(failed.statusCode).toBe(400);
    expect(failed.headers["content-type"]).toMatch(/^application\/json/);
    expect(failed.body).toBe(
      `{"error":"NuropbValidationError","description":"over the limit","details":{"limit":${String(HUGE)}}}`,
    );
  });
});

describe("commands and events", () => {
  it("POST /command/{service}/{method} sends a command: 202, and the service gets it", async () => {
    const gateway = await exposedGateway();
    const res = await gateway.server.inject({
      method: "POST",
      url: "/command/orders/record",
      headers: json,
      payload: { n: 1 },
    });
    expect(res.statusCode).toBe(202);
    await expect.poll(() => mesh.orders.commands).toEqual([{ n: 1 }]);
    const notACommand = await gateway.server.inject({
      method: "POST",
      url: "/command/orders/add",
      headers: json,
      payload: {},
    });
    expect(notACommand.statusCode).toBe(404);
  });

  it("POST /publish/{topic} publishes within the exposed patterns, with an empty context", async () => {
    const gateway = await exposedGateway();
    const got: unknown[] = [];
    const { createService } = await import("@nuropb/core");
    const listener = createService({
      transport: mesh.transport(),
      name: "listener",
      instance: { handleEvent: (e: unknown) => void got.push(e) },
      eventBindings: ["orders.#"],
    });
    await listener.connect();
    try {
      const res = await gateway.server.inject({
        method: "POST",
        url: "/publish/orders.created",
        headers: { ...json, authorization: "Bearer secret" },
        payload: { id: "7" },
      });
      expect(res.statusCode).toBe(202);
      await expect.poll(() => got.length).toBe(1);
      expect(got[0]).toMatchObject({ topic: "orders.created", event: { id: "7" }, context: {} });

      for (const [topic, status] of [
        ["billing.created", 403],
        ["orders.created.late", 403], // `orders.*` is one word after orders
        ["orders.*", 400],
        ["orders..x", 400],
      ] as const) {
        const r = await gateway.server.inject({
          method: "POST",
          url: `/publish/${topic}`,
          headers: json,
          payload: {},
        });
        expect(r.statusCode, topic).toBe(status);
      }
      expect(got.length).toBe(1);
    } finally {
      await listener.disconnect();
    }
  });
});

describe("the authorize hook", () => {
  it("is asked about each operation, and only true lets it through", async () => {
    const asked: GatewayAuthorizeRequest[] = [];
    const gateway = await exposedGateway({
      authorize: (req) => {
        asked.push(req);
        if (req.token === "Bearer boom") throw new Error("db down: password=hunter2");
        return req.token === "Bearer admin" ? true : (undefined as unknown as boolean);
      },
    });
    const call = (token: string) =>
      gateway.server.inject({
        method: "POST",
        url: "/api/orders/add",
        headers: { ...json, authorization: token },
        payload: { a: 1, b: 2 },
      });
    const refused = await call("Bearer user");
    expect(refused.statusCode).toBe(403);
    expect(refused.json().error).toBe("NuropbAuthorizationError");
    const allowed = await call("Bearer admin");
    expect(allowed.statusCode).toBe(200);
    const broken = await call("Bearer boom");
    expect(broken.statusCode).toBe(500);
    expect(broken.body).not.toContain("hunter2");
    expect(asked[0]).toEqual({
      kind: "request",
      service: "orders",
      method: "add",
      sealed: false,
      token: "Bearer user",
      via: "http",
      remoteAddress: "127.0.0.1",
    });

    const pub = await gateway.server.inject({
      method: "POST",
      url: "/publish/orders.x",
      headers: { ...json, authorization: "Bearer user" },
      payload: {},
    });
    expect(pub.statusCode).toBe(403);
    expect(asked.at(-1)).toMatchObject({ kind: "publish", topic: "orders.x" });
  });

  it("a thrown NuroPb error is answered as itself", async () => {
    const { NuropbAuthenticationError } = await import("@nuropb/protocol");
    const gateway = await exposedGateway({
      authorize: () => {
        throw new NuropbAuthenticationError("log in first");
      },
    });
    const res = await gateway.server.inject({
      method: "POST",
      url: "/api/orders/add",
      headers: json,
      payload: { a: 1, b: 2 },
    });
    expect(res.statusCode).toBe(401);
    expect(res.json()).toEqual({ error: "NuropbAuthenticationError", description: "log in first" });
  });
});

describe("HTTP_STATUS_BY_ERROR", () => {
  it("maps every NuroPb error class a call can end with", () => {
    expect(HTTP_STATUS_BY_ERROR).toMatchObject({
      NuropbValidationError: 400,
      NuropbAuthenticationError: 401,
      NuropbAuthorizationError: 403,
      NuropbHandlingError: 404,
      NuropbNotDeliveredError: 503,
      NuropbTimeoutError: 504,
    });
  });
});

describe("GET /api", () => {
  it("lists the exposed services and describes each with only its exposed methods", async () => {
    const gateway = mesh.gateway({
      expose: { services: { orders: { requests: ["add"], commands: ["record"] } } },
    });
    await gateway.ready();
    const list = await gateway.server.inject({ method: "GET", url: "/api" });
    expect(list.json()).toEqual({ services: ["orders"] });
    const d = await gateway.server.inject({ method: "GET", url: "/api/orders" });
    expect(d.statusCode).toBe(200);
    const body = d.json();
    expect(Object.keys(body.methods).sort()).toEqual(["add", "record"]);
    expect(body.gateway).toEqual({
      requests: ["add"],
      commands: ["record"],
      sealed: false,
      context_token_key: "Authorization",
    });
    const none = await gateway.server.inject({ method: "GET", url: "/api/billing" });
    expect(none.statusCode).toBe(404);
  });
});

describe("GET /stats/{service}", () => {
  it("answers what the service answers nuropb_stats with, naming only its exposed methods", async () => {
    const gateway = mesh.gateway({
      expose: { services: { orders: { requests: ["add", "fail"], commands: ["record"] } } },
    });
    await gateway.ready();
    const call = (method: string, payload: object) =>
      gateway.server.inject({
        method: "POST",
        url: `/api/orders/${method}`,
        headers: json,
        payload,
      });
    expect((await call("add", { a: 1, b: 2 })).statusCode).toBe(200);
    expect((await call("add", { a: 3, b: 4 })).statusCode).toBe(200);
    expect((await call("fail", {})).statusCode).toBe(500);
    // Called on the mesh, not through the gateway: echo is described but not exposed here,
    // internal is hidden.
    const client = await mesh.client();
    await client.request("orders", "echo", { x: 1 });
    await client.request("orders", "internal", {});

    const res = await gateway.server.inject({ method: "GET", url: "/stats/orders" });
    expect(res.statusCode).toBe(200);
    expect(res.headers["content-type"]).toMatch(/^application\/json/);
    const body = res.json();
    expect(body.service).toBe("orders");
    const stats = body.stats;
    expect(stats).toMatchObject({
      type: "nuropb_stats_response",
      service_name: "orders",
      connected: true,
      transport: { kind: "memory", state: "open" },
      other_method_calls: 2,
    });
    expect(stats.uptime_ms).toBeGreaterThanOrEqual(0);
    expect(Object.keys(stats.methods).sort()).toEqual(["add", "fail"]);
    expect(stats.methods.add).toMatchObject({ num_requests: 2, num_errors: 0, last_error: null });
    expect(stats.methods.add.processing_time_ms.p99).toBeGreaterThanOrEqual(
      stats.methods.add.processing_time_ms.p50,
    );
    expect(stats.methods.fail).toMatchObject({
      num_requests: 1,
      num_errors: 1,
      last_error: { error: "NuropbException", description: expect.stringContaining("boom") },
    });

    // With "*", every method the description lists is named (hidden ones still are not).
    const all = mesh.gateway({ expose: { services: { orders: { requests: "*" } } } });
    await all.ready();
    const wide = (await all.server.inject({ method: "GET", url: "/stats/orders" })).json();
    expect(Object.keys(wide.stats.methods).sort()).toEqual(["add", "echo", "fail"]);
    expect(wide.stats.other_method_calls).toBe(1);
  });

  it("refuses a service that is not exposed with 404, and exposes none by default", async () => {
    const gateway = await exposedGateway();
    const billing = await gateway.server.inject({ method: "GET", url: "/stats/billing" });
    expect(billing.statusCode).toBe(404);
    expect(billing.json().error).toBe("NuropbHandlingError");
    const bare = mesh.gateway({});
    await bare.ready();
    const orders = await bare.server.inject({ method: "GET", url: "/stats/orders" });
    expect(orders.statusCode).toBe(404);
    expect(orders.json()).toEqual({
      error: "NuropbHandlingError",
      description: "orders is not exposed by this gateway",
    });
  });

  it("asks the authorize hook (kind 'stats'), and only true lets it through", async () => {
    const asked: GatewayAuthorizeRequest[] = [];
    const gateway = await exposedGateway({
      authorize: (req) => {
        asked.push(req);
        return req.kind !== "stats" || req.token === "Bearer ops";
      },
    });
    const refused = await gateway.server.inject({
      method: "GET",
      url: "/stats/orders",
      headers: { authorization: "Bearer user" },
    });
    expect(refused.statusCode).toBe(403);
    expect(refused.json()).toEqual({
      error: "NuropbAuthorizationError",
      description: "the gateway does not allow this stats (orders)",
    });
    expect(asked).toEqual([
      {
        kind: "stats",
        service: "orders",
        sealed: false,
        token: "Bearer user",
        via: "http",
        remoteAddress: "127.0.0.1",
      },
    ]);
    const allowed = await gateway.server.inject({
      method: "GET",
      url: "/stats/orders",
      headers: { authorization: "Bearer ops" },
    });
    expect(allowed.statusCode).toBe(200);
    expect(allowed.json().stats.service_name).toBe("orders");
  });

  it("answers stats: null for a Python-shaped service, which does not answer nuropb_stats", async () => {
    const seen: { method: string; context: unknown }[] = [];
    const py = await servePythonShaped(
      mesh.transport(),
      "py_orders",
      undefined,
      (method, context) => seen.push({ method, context }),
    );
    try {
      const gateway = mesh.gateway({ expose: { services: { py_orders: { requests: "*" } } } });
      await gateway.ready();
      const ask = () =>
        gateway.server.inject({
          method: "GET",
          url: "/stats/py_orders",
          headers: { authorization: "Bearer secret-token" },
        });
      // Asked at once, the gateway asks the service once.
      const [a, b] = await Promise.all([ask(), ask()]);
      expect(a.statusCode).toBe(200);
      expect(a.json()).toEqual({ service: "py_orders", stats: null });
      expect(b.json()).toEqual({ service: "py_orders", stats: null });
      // The caller's token never travels with a stats request.
      expect(seen).toEqual([{ method: "nuropb_stats", context: {} }]);
    } finally {
      await py.stop();
    }
  });

  it("answers 502 when the service answers nuropb_stats with something else", async () => {
    // A peer with a method of that name: it echoes the params, {}.
    const py = await servePythonShaped(mesh.transport(), "py_odd", {
      ...PYTHON_DESCRIPTION,
      service_name: "py_odd",
      methods: {
        ...PYTHON_DESCRIPTION.methods,
        nuropb_stats: PYTHON_DESCRIPTION.methods.get_orders,
      },
    });
    try {
      const gateway = mesh.gateway({ expose: { services: { py_odd: { requests: [] } } } });
      await gateway.ready();
      const res = await gateway.server.inject({ method: "GET", url: "/stats/py_odd" });
      expect(res.statusCode).toBe(502);
      expect(res.json()).toEqual({
        error: "NuropbMessageError",
        description: "py_odd answered nuropb_stats with something else",
      });
    } finally {
      await py.stop();
    }
  });

  it("answers 503 when no service is there", async () => {
    const gateway = mesh.gateway({ expose: { services: { billing: { requests: ["charge"] } } } });
    await gateway.ready();
    const res = await gateway.server.inject({ method: "GET", url: "/stats/billing" });
    expect(res.statusCode).toBe(503);
    expect(res.json().error).toBe("NuropbNotDeliveredError");
  });
});

import { createClient, createService } from "@nuropb/core";
import type { MeshClient, MeshService, RequestContext } from "@nuropb/core";
import { createServiceKeys } from "@nuropb/crypto";
import type { ServiceKeys } from "@nuropb/crypto";
import { NuropbAuthenticationError, NuropbValidationError } from "@nuropb/protocol";
import type { Transport } from "@nuropb/protocol";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import type { MemoryHub } from "@nuropb/transport-memory";
import { createGateway } from "../src/index.ts";
import type { Gateway, GatewayOptions } from "../src/index.ts";

/** 2^64: a NuroPb integer that only a bigint holds exactly. */
export const HUGE = 2n ** 64n;

/** The service the gateway tests call. */
export class Orders {
  readonly commands: unknown[] = [];
  /** How many `sleep` calls have started. */
  sleeps = 0;

  getOrder(params: { id: string }, ctx: RequestContext): { id: string; owner: string } {
    return { id: params.id, owner: (ctx.userClaims as { user: string }).user };
  }

  add(params: { a: number; b: number }): number {
    return params.a + params.b;
  }

  fail(): never {
    throw new Error("boom");
  }

  echo(params: unknown): unknown {
    return params;
  }

  async sleep(params: { ms: number }): Promise<string> {
    this.sleeps++;
    await new Promise((resolve) => setTimeout(resolve, params.ms));
    return "slept";
  }

  /** Answers, or fails with, an integer beyond 2^53 (a bigint), in the result or the error. */
  huge(params: { fail?: boolean }): { n: bigint } {
    if (params.fail === true) {
      throw new NuropbValidationError("over the limit", { details: { limit: HUGE } });
    }
    return { n: HUGE };
  }

  internal(): string {
    return "never through the gateway";
  }

  record(params: Record<string, unknown>): void {
    this.commands.push(params);
  }

  create(params: { id: string }, ctx: RequestContext): { created: string } {
    ctx.addEvent({ topic: "orders.created", event: { id: params.id } });
    return { created: params.id };
  }

  whoami(_params: unknown, ctx: RequestContext): unknown {
    return ctx.context;
  }

  secret(params: { text: string }, ctx: RequestContext): { length: number; encrypted: boolean } {
    return { length: params.text.length, encrypted: ctx.encrypted };
  }
}

/** `authorize` of `getOrder`: "Bearer ok" is ada, no token is a 401, anything else a 403. */
function authorize(token: unknown): unknown {
  if (token === undefined) throw new NuropbAuthenticationError("no token");
  return token === "Bearer ok" ? { user: "ada" } : false;
}

let sharedKeys: ServiceKeys | undefined;

/** One RSA/nacl key pair for the whole test run (RSA generation costs ~100 ms). */
export function ordersKeys(): ServiceKeys {
  sharedKeys ??= createServiceKeys();
  return sharedKeys;
}

/** A memory mesh with the `orders` service on it, and a factory of gateways in front of it. */
export interface TestMesh {
  readonly hub: MemoryHub;
  readonly orders: Orders;
  readonly service: MeshService<Orders>;
  /** A fresh memory transport on the hub. */
  transport(): Transport;
  /** A connected plain client on the hub. */
  client(): Promise<MeshClient>;
  /** A gateway on its own transport (closed by `close()`). */
  gateway(options: Omit<GatewayOptions, "transport">): Gateway;
  close(): Promise<void>;
}

export async function startMesh(): Promise<TestMesh> {
  const hub = createMemoryHub();
  const transports: Transport[] = [];
  const closers: (() => Promise<void>)[] = [];
  const transport = (): Transport => {
    const t = createMemoryTransport({ hub });
    transports.push(t);
    return t;
  };
  const orders = new Orders();
  const service = createService({
    transport: transport(),
    name: "orders",
    instance: orders,
    description: "Orders, for the gateway tests",
    keys: ordersKeys(),
    methods: {
      getOrder: {
        description: "Reads an order",
        authorize,
        params: {
          type: "object",
          required: ["id"],
          properties: { id: { type: "string" } },
          additionalProperties: false,
        },
        result: {
          type: "object",
          required: ["id", "owner"],
          properties: { id: { type: "string" }, owner: { type: "string" } },
        },
      },
      add: {
        description: "Adds two numbers",
        params: {
          type: "object",
          required: ["a", "b"],
          properties: { a: { type: "number" }, b: { type: "number" } },
        },
        result: { type: "number" },
      },
      create: {
        params: { type: "object", required: ["id"], properties: { id: { type: "string" } } },
      },
      internal: { hide: true },
      secret: {
        requiresEncryption: true,
        params: { type: "object", required: ["text"], properties: { text: { type: "string" } } },
      },
    },
  });
  await service.connect();
  return {
    hub,
    orders,
    service,
    transport,
    async client() {
      const c = createClient({ transport: transport() });
      await c.connect();
      closers.push(() => c.disconnect());
      return c;
    },
    gateway(options) {
      const g = createGateway({ ...options, transport: transport() });
      closers.push(() => g.close());
      return g;
    },
    async close() {
      for (const c of closers.reverse()) await c();
      await service.disconnect();
      for (const t of transports) await t.close();
    },
  };
}

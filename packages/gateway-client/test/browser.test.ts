import { fileURLToPath } from "node:url";
import { createService } from "@nuropb/core";
import type { RequestContext } from "@nuropb/core";
import { createServiceKeys } from "@nuropb/crypto";
import { createGateway } from "@nuropb/gateway";
import type { Gateway } from "@nuropb/gateway";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import { build } from "esbuild";
import { chromium } from "playwright-core";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, expect, it } from "vitest";

// The client as a browser runs it: bundled as-is (no Node built-ins), in Debian's chromium,
// sealing with the browser's own WebCrypto. A browser that cannot start fails the test.

/** The browser globals the page script uses (the tests compile without the DOM types). */
interface Page {
  readonly document: { readonly title: string };
  readonly location: { readonly origin: string };
  readonly isSecureContext: boolean;
  readonly gatewayClient: typeof import("../src/index.ts");
}

class Vault {
  seen: boolean[] = [];
  store(params: { secret: string }, ctx: RequestContext): { stored: number; user: unknown } {
    this.seen.push(ctx.encrypted);
    return { stored: params.secret.length, user: ctx.userClaims };
  }
}

const hub = createMemoryHub();
const transports = [createMemoryTransport({ hub }), createMemoryTransport({ hub })] as const;
const vault = new Vault();
const service = createService({
  transport: transports[0],
  name: "vault",
  instance: vault,
  keys: createServiceKeys({ rsa: true }),
  methods: {
    store: { requiresEncryption: true, authorize: (t) => t === "Bearer me" && { user: "me" } },
  },
});
let gateway: Gateway;
let url: string;
let browser: Browser;

beforeAll(async () => {
  const bundle = await build({
    entryPoints: [fileURLToPath(new URL("../src/index.ts", import.meta.url))],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    write: false,
  });
  const clientJs = bundle.outputFiles[0]?.text ?? "";
  await service.connect();
  gateway = createGateway({
    transport: transports[1],
    expose: {
      services: { vault: { requests: ["store"], sealed: true } },
      publish: ["chat.*"],
      subscribe: ["chat.*"],
    },
    pages: false,
  });
  gateway.server.get("/test/client.js", (_req, reply) =>
    reply.type("text/javascript").send(clientJs),
  );
  gateway.server.get("/test/", (_req, reply) =>
    reply
      .type("text/html")
      .send(
        '<!doctype html><title>loading</title><script type="module">import * as m from "/test/client.js"; window.gatewayClient = m; document.title = "ready";</script>',
      ),
  );
  url = await gateway.listen();
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await gateway.close();
  await service.disconnect();
  for (const t of transports) await t.close();
});

it("in chromium: a sealed call, a typed proxy, and events both ways", async () => {
  const page = await browser.newPage();
  const sent: string[] = [];
  page.on("websocket", (ws) => ws.on("framesent", (f) => sent.push(String(f.payload))));
  await page.goto(`${url}/test/`);
  await page.waitForFunction(() => (globalThis as unknown as Page).document.title === "ready");
  const out = await page.evaluate(async () => {
    const g = globalThis as unknown as Page;
    const client = g.gatewayClient.createGatewayClient({
      url: g.location.origin,
      token: "Bearer me",
    });
    const got: unknown[] = [];
    await client.subscribe("chat.*", (e) => got.push([e.topic, e.event]));
    const sealed = await client.request(
      "vault",
      "store",
      { secret: "browser secret" },
      { encrypted: true },
    );
    const viaProxy = await client
      .proxy<{ store(p: { secret: string }): { stored: number } }>("vault")
      .store({ secret: "abc" }, { encrypted: true });
    await client.publish("chat.hello", { from: "browser" });
    for (let i = 0; i < 100 && got.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    await client.close();
    return { sealed, viaProxy, got, secure: g.isSecureContext };
  });
  expect(out).toEqual({
    sealed: { stored: 14, user: { user: "me" } },
    viaProxy: { stored: 3, user: { user: "me" } },
    got: [["chat.hello", { from: "browser" }]],
    secure: true,
  });
  expect(vault.seen).toEqual([true, true]);
  expect(sent.some((f) => f.includes('"sealed-request"'))).toBe(true);
  expect(sent.join("\n")).not.toContain("browser secret");
  await page.close();
});

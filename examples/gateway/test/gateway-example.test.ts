import { afterEach, expect, it } from "vitest";
import { curlLine, main, PAGE_PATH, startShopGateway } from "../src/main.ts";
import type { RunningShopGateway } from "../src/main.ts";

const running: RunningShopGateway[] = [];
afterEach(async () => {
  for (const r of running.splice(0)) await r.close();
});

async function start(): Promise<RunningShopGateway> {
  const r = await startShopGateway({ amqpUrl: "", port: 0 });
  running.push(r);
  return r;
}

/** The request the printed curl line makes, made with fetch (curl's URL, headers and body). */
function fetchLikeCurl(line: string, headers: Record<string, string> = {}): Promise<Response> {
  const m = /^curl -s -X POST (\S+) -H '([^:]+): ([^']+)' -d '([^']+)'$/.exec(line);
  if (m === null) throw new Error(`not the curl line the README shows: ${line}`);
  const [, url, name, value, body] = m as unknown as [string, string, string, string, string];
  return fetch(url, { method: "POST", headers: { [name]: value, ...headers }, body });
}

it("answers the curl line's request with the service's quote", async () => {
  const { url } = await start();
  const res = await fetchLikeCurl(curlLine(url));
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toMatch(/^application\/json/);
  expect(await res.json()).toEqual({ item: "tea", quantity: 3, totalCents: 1350 });
});

it("passes the Authorization header to the service, and answers refusals with their status", async () => {
  const { url } = await start();
  const order = (headers: Record<string, string>) =>
    fetch(`${url}/api/shop/placeOrder`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: '{"item":"cake","quantity":2}',
    });
  const anonymous = await order({});
  expect(anonymous.status).toBe(401);
  expect(((await anonymous.json()) as { error: string }).error).toBe("NuropbAuthenticationError");
  const stranger = await order({ authorization: "Bearer nobody" });
  expect(stranger.status).toBe(403);
  const demo = await order({ authorization: "Bearer demo" });
  expect(demo.status).toBe(200);
  expect(await demo.json()).toEqual({
    orderId: "order-1",
    by: "demo",
    item: "cake",
    quantity: 2,
    totalCents: 1250,
  });
  // Bad params are the service's schema refusing them; a method not exposed does not exist.
  const bad = await fetch(`${url}/api/shop/quote`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: '{"item":"beer","quantity":1}',
  });
  expect(bad.status).toBe(400);
  expect((await fetch(`${url}/api/shop/nuropb_describe`, { method: "POST" })).status).toBe(404);
});

it("serves the page, the explorer and an OpenAPI document of the exposed methods", async () => {
  const { url } = await start();
  const page = await fetch(`${url}${PAGE_PATH}`);
  expect(page.status).toBe(200);
  expect(page.headers.get("content-type")).toMatch(/^text\/html/);
  expect(await page.text()).toContain("/api/shop/");
  expect((await fetch(`${url}/explorer/`)).status).toBe(200);
  const doc = (await (await fetch(`${url}/openapi.json`)).json()) as { paths: object };
  expect(Object.keys(doc.paths).sort()).toEqual(["/api/shop/placeOrder", "/api/shop/quote"]);
});

it("main prints where to go and the curl line, and stops when told", async () => {
  const stop = new AbortController();
  const printed: string[] = [];
  const done = main({
    amqpUrl: "",
    port: 0,
    signal: stop.signal,
    print: (line) => printed.push(line),
  });
  await expect.poll(() => printed.length).toBeGreaterThanOrEqual(6);
  const url = /^page: +(http:\/\/127\.0\.0\.1:\d+)\/shop\/$/.exec(printed[1] ?? "")?.[1];
  expect(url).toBeDefined();
  expect(printed[0]).toBe("shop and the gateway on the memory transport");
  const tryLine = printed.find((l) => l.startsWith("try:"))?.replace(/^try: +/, "") ?? "";
  expect(tryLine).toBe(curlLine(url as string));
  expect((await fetchLikeCurl(tryLine)).status).toBe(200);
  stop.abort();
  expect((await done).at(-1)).toBe("stopped");
  await expect(fetch(`${url as string}/api`)).rejects.toThrow();
});

it("refuses a port that is not one, before starting anything", async () => {
  await expect(startShopGateway({ amqpUrl: "", port: 70_000 })).rejects.toThrow(TypeError);
  await expect(startShopGateway({ amqpUrl: "", port: 1.5 })).rejects.toThrow(/whole number/);
});

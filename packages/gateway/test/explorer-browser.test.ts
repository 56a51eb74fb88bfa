import { chromium } from "playwright-core";
import type { Browser, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, beforeEach, expect, it } from "vitest";
import { startMesh } from "./mesh.ts";
import type { TestMesh } from "./mesh.ts";
import { servePythonShaped } from "./python-shaped.ts";

// A real browser: Debian's chromium (scripts/install-test-deps.sh installs it). One that cannot
// start fails these tests; they are never skipped.
let browser: Browser;
beforeAll(async () => {
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
});

let mesh: TestMesh;
let page: Page;
/** Requests the page tried to make anywhere but the gateway (a CDN, say): refused and listed. */
let foreign: string[];
beforeEach(async () => {
  mesh = await startMesh();
  page = await browser.newPage();
  foreign = [];
  await page.route("**/*", (route) => {
    const url = new URL(route.request().url());
    if (url.hostname === "127.0.0.1") return route.continue();
    foreign.push(url.href);
    return route.abort();
  });
});
afterEach(async () => {
  await page.close();
  await mesh.close();
});

async function gatewayUrl(more: Record<string, { requests: "*" }> = {}): Promise<string> {
  const gateway = mesh.gateway({
    expose: {
      services: {
        orders: { requests: ["add", "getOrder", "create"], commands: ["record"] },
        ...more,
      },
      subscribe: ["orders.#"],
    },
  });
  return gateway.listen();
}

it("the explorer lists the services, calls a method through its form, and shows live events", async () => {
  const url = await gatewayUrl();
  await page.goto(`${url}/explorer/`);
  await page.locator('#services[data-ready="true"]').waitFor();
  const add = page.locator('form[data-method="orders.add"]');
  await expect(add.locator('input[name="a"]').getAttribute("type")).resolves.toBe("number");

  await add.locator('input[name="a"]').fill("2");
  await add.locator('input[name="b"]').fill("40");
  await add.locator('button[type="submit"]').click();
  const result = page.locator('pre[data-output="orders.add"]');
  await expect.poll(() => result.textContent()).toBe("42");

  // An error shows its status and the NuroPb error object.
  const getOrder = page.locator('form[data-method="orders.getOrder"]');
  await getOrder.locator('input[name="id"]').fill("7");
  await getOrder.locator('button[type="submit"]').click();
  const refused = page.locator('pre[data-output="orders.getOrder"]');
  await expect.poll(() => refused.getAttribute("data-status")).toBe("401");
  expect(await refused.textContent()).toContain("NuropbAuthenticationError");
  // With a token, the same form succeeds.
  await page.locator("#token").fill("Bearer ok");
  await getOrder.locator('button[type="submit"]').click();
  await expect
    .poll(() => refused.textContent())
    .toBe(JSON.stringify({ id: "7", owner: "ada" }, null, 2));

  // Live events matching a pattern.
  await page.locator("#pattern").fill("orders.#");
  await page.locator('#subscribe-form button[type="submit"]').click();
  await expect
    .poll(() => page.locator("#events-status").textContent())
    .toBe("subscribed to orders.#");
  await mesh.service.publishEvent("orders.shipped", { id: "7", carrier: "<b>owl</b>" });
  const item = page.locator('#event-list li[data-topic="orders.shipped"]');
  await item.waitFor();
  expect(await item.textContent()).toContain('{"id":"7","carrier":"<b>owl</b>"}'); // text, not HTML
  expect(await page.locator("#event-list b").count()).toBe(0);

  // An event a call through the page raised arrives too.
  const create = page.locator('form[data-method="orders.create"]');
  await create.locator('input[name="id"]').fill("9");
  await create.locator('button[type="submit"]').click();
  await page.locator('#event-list li[data-topic="orders.created"]').waitFor();
  expect(foreign).toEqual([]);
});

it("the explorer shows a service's stats, refreshed on demand, and says when it offers none", async () => {
  const py = await servePythonShaped(mesh.transport(), "py_orders");
  try {
    const url = await gatewayUrl({ py_orders: { requests: "*" } });
    await page.goto(`${url}/explorer/`);
    await page.locator('#services[data-ready="true"]').waitFor();
    const stats = page.locator('details[data-stats="orders"]');
    await stats.locator("[data-stats-summary]").waitFor();
    expect(await stats.locator("[data-stats-summary]").textContent()).toMatch(
      /^up \d+ s · connected · memory open · \d+ in flight$/,
    );
    const addRow = stats.locator('tr[data-method="add"]');
    expect(await addRow.count()).toBe(0); // not called yet

    const add = page.locator('form[data-method="orders.add"]');
    await add.locator('input[name="a"]').fill("2");
    await add.locator('input[name="b"]').fill("40");
    const result = page.locator('pre[data-output="orders.add"]');
    const refresh = stats.getByRole("button", { name: "Refresh stats" });
    for (const count of ["1", "2"]) {
      await result.evaluate((node) => (node.textContent = ""));
      await add.locator('button[type="submit"]').click();
      await expect.poll(() => result.textContent()).toBe("42");
      await refresh.click();
      await expect.poll(() => addRow.locator('td[data-field="calls"]').textContent()).toBe(count);
    }
    expect(await addRow.locator('td[data-field="errors"]').textContent()).toBe("0");
    for (const field of ["p50", "p99"]) {
      expect(await addRow.locator(`td[data-field="${field}"]`).textContent()).toMatch(
        /^\d+(\.\d+)?$/,
      );
    }

    // A failed call shows in its errors and last error.
    const getOrder = page.locator('form[data-method="orders.getOrder"]');
    await getOrder.locator('input[name="id"]').fill("7");
    await getOrder.locator('button[type="submit"]').click();
    await expect
      .poll(() => page.locator('pre[data-output="orders.getOrder"]').getAttribute("data-status"))
      .toBe("401");
    await refresh.click();
    const getOrderRow = stats.locator('tr[data-method="getOrder"]');
    await expect.poll(() => getOrderRow.locator('td[data-field="errors"]').textContent()).toBe("1");
    expect(await getOrderRow.locator('td[data-field="last-error"]').textContent()).toMatch(
      /^NuropbAuthenticationError: orders\.getOrder needs a token/,
    );

    // A Python NuroPb service answers nuropb_stats with NuropbHandlingError.
    const none = page.locator('details[data-stats="py_orders"] [data-stats-none]');
    await none.waitFor();
    expect(await none.textContent()).toBe("this service offers no stats");
    expect(foreign).toEqual([]);
  } finally {
    await py.stop();
  }
});

it("the API page renders the OpenAPI document from local files only", async () => {
  const url = await gatewayUrl();
  await page.goto(`${url}/docs/`);
  await page.getByText("/api/orders/add").first().waitFor();
  expect(await page.getByText("/command/orders/record").count()).toBeGreaterThan(0);
  expect(foreign).toEqual([]);
});

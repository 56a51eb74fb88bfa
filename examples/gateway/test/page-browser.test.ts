import { chromium } from "playwright-core";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, expect, it } from "vitest";
import { PAGE_PATH, startShopGateway } from "../src/main.ts";

// A real browser: Debian's chromium (scripts/install-test-deps.sh installs it), launched as
// packages/gateway's browser tests do. One that cannot start fails this test; it is never skipped.
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

it("the page quotes, orders with a token, and shows the order's event", async () => {
  await using shop = await startShopGateway({ amqpUrl: "", port: 0 });
  const page = await browser.newPage();
  const foreign: string[] = [];
  await page.route("**/*", (route) => {
    const url = new URL(route.request().url());
    if (url.hostname === "127.0.0.1") return route.continue();
    foreign.push(url.href);
    return route.abort();
  });
  try {
    await page.goto(`${shop.url}${PAGE_PATH}`);
    const status = page.locator("#events-status");
    await expect.poll(() => status.textContent()).toBe("subscribed to shop.#");

    const result = page.locator("#result");
    await page.locator('select[name="item"]').selectOption("coffee");
    await page.locator('input[name="quantity"]').fill("4");
    await page.locator('button[value="quote"]').click();
    await expect.poll(() => result.getAttribute("data-status")).toBe("200");
    expect(JSON.parse((await result.textContent()) ?? "")).toEqual({
      item: "coffee",
      quantity: 4,
      totalCents: 1200,
    });

    // Without a token the service refuses the order; the page shows the status and the error.
    await page.locator('button[value="placeOrder"]').click();
    await expect.poll(() => result.getAttribute("data-status")).toBe("401");
    expect(await result.textContent()).toContain("NuropbAuthenticationError");

    await page.locator("#token").fill("Bearer demo");
    await page.locator('button[value="placeOrder"]').click();
    await expect.poll(() => result.getAttribute("data-status")).toBe("200");
    expect(JSON.parse((await result.textContent()) ?? "")).toMatchObject({
      orderId: "order-1",
      by: "demo",
    });
    const event = page.locator('#events li[data-topic="shop.ordered"]');
    await event.waitFor();
    expect(await event.textContent()).toBe(
      'shop.ordered {"orderId":"order-1","item":"coffee","quantity":4,"totalCents":1200}',
    );
    expect(foreign).toEqual([]);
  } finally {
    await page.close();
  }
});

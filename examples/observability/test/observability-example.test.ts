import { afterEach, describe, expect, it, vi } from "vitest";
import { main } from "../src/main.ts";

afterEach(() => {
  vi.restoreAllMocks();
});

describe("the observability example", () => {
  it("prints one trace per checkout across the three services, and the stats", async () => {
    const lines = await main({ consoleExporter: false, print: () => undefined });
    const shown = lines.map((l) => l.replace(/^trace [0-9a-f]{32}$/, "trace <id>"));
    expect(shown).toEqual([
      "order o-book-2 placed",
      "refused: not enough book in stock",
      "trace <id>",
      "send storefront [producer] storefront.checkout ok",
      "   └─ process storefront [consumer] storefront.checkout ok [linked to its sender]",
      "      └─ send orders [producer] orders.create ok",
      "         └─ process orders [consumer] orders.create ok [linked to its sender]",
      "            └─ send inventory [producer] inventory.reserve ok",
      "               └─ process inventory [consumer] inventory.reserve ok [linked to its sender]",
      "trace <id>",
      "send storefront [producer] storefront.checkout error (NuropbValidationError)",
      "   └─ process storefront [consumer] storefront.checkout error (NuropbValidationError) [linked to its sender]",
      "      └─ send orders [producer] orders.create error (NuropbValidationError)",
      "         └─ process orders [consumer] orders.create error (NuropbValidationError) [linked to its sender]",
      "            └─ send inventory [producer] inventory.reserve error (NuropbValidationError)",
      "               └─ process inventory [consumer] inventory.reserve error (NuropbValidationError) [linked to its sender]",
      "orders stats: create called 2 times, 1 failed (last: NuropbValidationError)",
    ]);
    const [first, second] = lines.filter((l) => l.startsWith("trace "));
    expect(first).not.toBe(second);
  });

  it("exports every span to the console with ConsoleSpanExporter", async () => {
    const dir = vi.spyOn(console, "dir").mockImplementation(() => undefined);
    await main({ print: () => undefined });
    const exported = dir.mock.calls.map((c) => (c[0] as { name: string }).name);
    // 6 spans per checkout, 2 for the stats request.
    expect(exported).toHaveLength(14);
    expect(exported.filter((n) => n === "process inventory")).toHaveLength(2);
  });
});

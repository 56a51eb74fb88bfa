import { expect, it } from "vitest";
import { main } from "../src/main.ts";

it("serves two methods on the memory transport and prints their answers", async () => {
  const lines = await main({ print: () => {}, amqpUrl: "" });
  expect(lines).toEqual([
    "basic-example ready on the memory transport",
    'test_method -> {"param1":"value1","param2":{"param2a":"value2a"},"reply":"response from test_method"}',
    'test_async_method -> "response from test_async_method"',
  ]);
});

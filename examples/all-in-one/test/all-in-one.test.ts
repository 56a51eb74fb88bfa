import { expect, it } from "vitest";
import { main } from "../src/main.ts";

it("runs the all-in-one example on the memory transport and prints both responses", async () => {
  const prior = process.env.NUROPB_AMQP_URL;
  delete process.env.NUROPB_AMQP_URL;
  try {
    const lines = await main(() => {});
    expect(lines).toEqual([
      "transport: memory, mesh: nuropb",
      'test_method -> "response from test_service.test_method(value1, value2a)"',
      'test_requires_user_claims -> "hello user-1234"',
      "test_requires_user_claims with a bad token -> NuropbAuthorizationError: unknown token",
    ]);
  } finally {
    if (prior !== undefined) process.env.NUROPB_AMQP_URL = prior;
  }
});

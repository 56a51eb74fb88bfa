import { expect, it } from "vitest";
import { main } from "../src/main.ts";

it("makes a request, a command, an event and an encrypted request on the memory transport", async () => {
  const lines = await main({ print: () => {}, amqpUrl: "" });
  expect(lines).toEqual([
    "client on the memory transport, with the sandbox service in-process",
    'request test_method -> "response from sandbox.test_method"',
    "command record_visit sent",
    "request visit_count -> 1",
    "event test-event published",
    'sandbox received event test-event: {"event_key":"event_value"}',
    'encrypted request save_secret -> {"saved":true,"length":12,"encrypted":true}',
  ]);
});

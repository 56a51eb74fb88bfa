import { expect, it } from "vitest";
import { main } from "../src/main.ts";

it("shows every service behaviour on the memory transport", async () => {
  const lines = await main({ print: () => {}, amqpUrl: "" });
  expect(lines).toEqual([
    "service-example ready on the memory transport",
    'test_method -> "response from service-example.test_method"',
    'test_async_method -> "response from service-example.test_async_method"',
    "sync_method -> 1",
    "async_method -> 2",
    "method_with_exception -> NuropbError: Runtime exception calling service-example.method_with_exception:Error: Test sync exception",
    "async_method_with_exception -> NuropbError: Runtime exception calling service-example.async_method_with_exception:Error: Test async method exception",
    "method_with_nuropb_exception -> NuropbError: Test Nuropb Exception",
    'success_with_events -> "response from service-example.success_with_events"',
    'handleEvent <- test-event {"event_key":"from NuropbSuccess"}',
    'add_event -> "response from service-example.add_event"',
    'handleEvent <- test-event {"event_key":"from ctx.addEvent"}',
    'call_again -> "response from service-example.call_again on the second delivery"',
    expect.stringMatching(
      /^call_again_always -> NuropbCallAgainReject: Rejecting second call again request for trace_id: [0-9a-f]+, correlation_id: [0-9a-f]+$/,
    ),
  ]);
});

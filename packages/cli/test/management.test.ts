import { afterEach, describe, expect, it, vi } from "vitest";
import { CliError } from "../src/errors.ts";
import { ExitCode, listServiceQueues, run } from "../src/index.ts";
import { capture } from "./helpers.ts";

// The management API query behind `services`, over a stubbed fetch; nothing here reaches a network.

const URL = "amqp://guest:hunter22@rabbit.invalid:5672/nuropb";
const API = "http://ann:hunter22@rabbit.invalid:15672/api";

afterEach(() => {
  vi.unstubAllGlobals();
});

/** A 200 answer whose body stream fails with `err` once read. */
function failingBody(err: Error): Response {
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(new TextEncoder().encode("["));
    },
    pull(controller) {
      controller.error(err);
    },
  });
  return new Response(body, { status: 200, headers: { "content-type": "application/json" } });
}

async function failure(p: Promise<unknown>): Promise<CliError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CliError);
  return err as CliError;
}

describe("listServiceQueues", () => {
  it("lists the service queues, sorted", async () => {
    const list = [
      { name: "nuropb-b-sq", consumers: 2, messages_ready: 1, messages_unacknowledged: 0 },
      { name: "other" },
      { name: "nuropb-a-sq", consumers: 1 },
    ];
    vi.stubGlobal("fetch", () => Promise.resolve(Response.json(list)));
    expect((await listServiceQueues(API, "nuropb", 1_000)).map((q) => q.service)).toEqual([
      "a",
      "b",
    ]);
  });

  it("exits 4 naming the API (password masked, as every management error does) when a 200 answer is not JSON", async () => {
    vi.stubGlobal("fetch", () =>
      Promise.resolve(
        new Response("<html>hunter22</html>", {
          status: 200,
          headers: { "content-type": "text/html" },
        }),
      ),
    );
    const c = capture();
    const code = await run(["services", "--url", URL, "--management-url", API], c.io);
    expect(code).toBe(ExitCode.transport);
    expect(c.stderr()).toMatch(
      /^error: cannot read the management API's answer from http:\/\/ann:\*\*\*\*@rabbit\.invalid:15672\/api: the answer is not JSON \(.+\)\nhint: /,
    );
    expect(c.stderr()).not.toContain("hunter22");
    expect(c.stderr()).not.toContain("ann@");
  });

  it("says the answer did not arrive in time when the body is slower than the timeout", async () => {
    const timeout = new DOMException("The operation was aborted due to timeout", "TimeoutError");
    vi.stubGlobal("fetch", () => Promise.resolve(failingBody(timeout)));
    const err = await failure(listServiceQueues(API, "nuropb", 300));
    expect(err.exitCode).toBe(ExitCode.transport);
    expect(err.message).toBe(
      "cannot read the management API's answer from http://ann:****@rabbit.invalid:15672/api: the answer did not arrive within 300 ms",
    );
  });
});

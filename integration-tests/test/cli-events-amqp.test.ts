import { createClient } from "@nuropb/core";
import { createAmqpTransport, teardownMesh } from "@nuropb/transport-amqp";
import { expect, it } from "vitest";
import { rabbitEnv, uniqueVhost } from "../src/amqp-helpers.ts";
import { cli } from "../src/cli-harness.ts";

// `nuropb mesh setup --event-log-…` on RabbitMQ: configureMesh makes the stream queue with the
// rest, and `nuropb events` reads it back.

it("mesh setup with event-log options sets the log up; events reads it", async () => {
  const vhost = uniqueVhost("cli-evlog");
  const url = `${rabbitEnv().amqpUrl}/${vhost}`;
  try {
    const setup = await cli([
      "mesh",
      "setup",
      "--event-log-max-age",
      "1d",
      "--event-log-max-bytes",
      "64MiB",
      "--url",
      url,
    ]);
    expect(setup.stderr).toBe("");
    expect(setup.code).toBe(0);
    expect(setup.stdout).toContain(`mesh ${vhost}: vhost created`);
    expect(setup.stdout).toContain("event log set up, keeps 1d and at most 64 MiB");

    const transport = createAmqpTransport({ url });
    const client = createClient({ transport });
    await client.connect();
    try {
      await client.publishEvent(
        "orders.created",
        { id: 1 },
        { Authorization: "Bearer s3cret", user: "ann" },
        { persisted: true },
      );
      await client.publishEvent("users.created", { id: 2 }, {}, { persisted: true });
    } finally {
      await client.disconnect();
      await transport.close();
    }
    const r = await cli(["events", "orders.*", "--since", "1h", "--json", "--url", url]);
    expect(r.code).toBe(0);
    const got = r.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(got.map((e) => [e.topic, e.event, e.context])).toEqual([
      ["orders.created", { id: 1 }, { user: "ann" }],
    ]);
    expect(r.stdout + r.stderr).not.toMatch(/s3cret/);
  } finally {
    await teardownMesh({ url }).catch(() => undefined);
  }
});

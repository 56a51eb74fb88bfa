import { describe, expect, it } from "vitest";
import { brokerUrl } from "../src/args.ts";
import { splitHostList, urlTransportFactory } from "../src/transports.ts";

// Issue #19: --url may list the nodes of a cluster with commas.
const settings = { connectTimeoutMs: 1000 };

describe("comma lists of broker hosts", () => {
  it("splits a host list into one URL per node", () => {
    expect(splitHostList("amqp://u:pw@h1:5672,h2:5673/shop")).toEqual([
      "amqp://u:pw@h1:5672/shop",
      "amqp://u:pw@h2:5673/shop",
    ]);
    expect(splitHostList("nats://h1:4222")).toEqual(["nats://h1:4222"]);
  });

  it.each([
    ["amqp://guest:guest@r1.invalid:5672,r2.invalid:5673/shop", "amqp", "shop"],
    ["nats://ann:s3cret@n1.invalid:4222,n2.invalid:4222/shop", "nats", "shop"],
  ])("makes for %s a %s transport on mesh %s", async (url, kind, mesh) => {
    const transport = urlTransportFactory(url, settings);
    expect(transport.kind).toBe(kind);
    expect(transport.mesh).toBe(mesh);
    await transport.close();
  });

  it("accepts a comma list in --url, never showing the password", () => {
    const parsed = brokerUrl("amqp://u:hunter22-pw@h1:5672,h2:5673/shop", {});
    expect(parsed).toMatchObject({ kind: "amqp", vhost: "shop" });
    expect(parsed.url).toBe("amqp://u:hunter22-pw@h1:5672,h2:5673/shop");
    expect(parsed.shown).not.toContain("hunter22-pw");
  });
});

import { describe, expect, it } from "vitest";
import { urlTransportFactory } from "../src/transports.ts";

// Making a transport does no I/O: these only check which transport a URL makes, on which mesh.
const settings = { connectTimeoutMs: 1000 };

describe("urlTransportFactory", () => {
  it.each([
    ["amqp://guest:guest@rabbit.invalid:5672/shop", "amqp", "shop"],
    ["amqps://guest:guest@rabbit.invalid/shop", "amqp", "shop"],
    ["nats://ann:s3cret@nats.invalid:4222/shop", "nats", "shop"],
    ["nats://nats.invalid:4222", "nats", "nuropb"],
    ["tls://nats.invalid:4222/shop", "nats", "shop"],
    ["redis://:s3cret@redis.invalid:6379/2?mesh=shop", "redis", "shop"],
    ["rediss://redis.invalid:6380", "redis", "nuropb"],
  ])("makes for %s a %s transport on mesh %s", async (url, kind, mesh) => {
    const transport = urlTransportFactory(url, settings);
    expect(transport.kind).toBe(kind);
    expect(transport.mesh).toBe(mesh);
    expect(transport.state).toBe("idle");
    await transport.close();
  });

  it("refuses another scheme with a TypeError that shows no URL", () => {
    expect(() => urlTransportFactory("http://u:hunter22@h/", settings)).toThrow(TypeError);
    expect(() => urlTransportFactory("http://u:hunter22@h/", settings)).not.toThrow(/hunter22/);
  });
});

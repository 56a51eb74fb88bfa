import { describe, expect, it } from "vitest";
import {
  brokerUrl,
  jsonObject,
  jsonValue,
  managementUrl,
  milliseconds,
  positiveInteger,
  serviceName,
  topic,
  topicPattern,
} from "../src/args.ts";
import { CliError, ExitCode } from "../src/errors.ts";

/** The CliError `fn` throws (fails the test when it throws nothing or something else). */
function usage(fn: () => unknown): CliError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).exitCode).toBe(ExitCode.usage);
    return err as CliError;
  }
  throw new Error("expected a usage error");
}

describe("brokerUrl", () => {
  it("takes --url before NUROPB_AMQP_URL and decodes the vhost", () => {
    const b = brokerUrl("amqp://ann:s3cret@rabbit:5672/my%2Fmesh", {
      NUROPB_AMQP_URL: "amqp://x:y@other/z",
    });
    expect(b).toEqual({
      kind: "amqp",
      url: "amqp://ann:s3cret@rabbit:5672/my%2Fmesh",
      shown: "amqp://ann:****@rabbit:5672/my%2Fmesh",
      vhost: "my/mesh",
      password: "s3cret",
      username: "ann",
    });
    expect(brokerUrl(undefined, { NUROPB_AMQP_URL: "amqps://h/v" }).vhost).toBe("v");
    expect(brokerUrl("amqp://h/v?heartbeat=30", {}).url).toBe("amqp://h/v?heartbeat=30");
  });

  it("says how to give a URL when there is none (an empty variable counts as none)", () => {
    for (const env of [{}, { NUROPB_AMQP_URL: "" }, { NUROPB_URL: "" }]) {
      expect(usage(() => brokerUrl(undefined, env)).message).toBe(
        "no broker URL: pass --url amqp://user:password@host:5672/vhost, nats://host:4222/mesh or redis://host:6379/0?mesh=name or set NUROPB_URL",
      );
    }
  });

  it.each([
    ["not a url", "--url is not a URL"],
    ["http://guest:hunter22@h/v", "--url must be an amqp://, amqps://, nats://, tls://, redis://"],
    ["nats://guest:hunter22@h:4222/a/b", "--url path is the mesh, one subject token"],
    ["redis://guest:hunter22@h:6379/0?mesh=", "--url parameter mesh must not be empty"],
    ["amqp://guest:hunter22@h:5672", "--url has no vhost"],
    ["amqp://guest:hunter22@h:5672/", "--url has no vhost"],
    ["amqp://guest:hunter22@h/a/b", "--url path must be one vhost segment"],
    ["amqp://guest:hunter22@h/%E0%A4%A", "--url vhost is not valid percent-encoding"],
    ["amqp://guest:hunter22@h/v?heartbeat=abc", "--url parameter heartbeat must be a whole number"],
    ["amqp://guest:hunter22@h/v?heartbeat=-1", "--url parameter heartbeat"],
    ["amqp://guest:hunter22@h/v?heartbeat=65536", "--url parameter heartbeat"],
  ])("refuses %s with a message that never shows the password", (url, message) => {
    const err = usage(() => brokerUrl(url, {}));
    expect(err.message).toContain(message);
    expect(err.message).not.toContain("hunter22");
  });

  it("names NUROPB_AMQP_URL when the bad URL came from there", () => {
    expect(usage(() => brokerUrl(undefined, { NUROPB_AMQP_URL: "http://h/v" })).message).toMatch(
      /^NUROPB_AMQP_URL must be an amqp:\/\//,
    );
  });

  it("takes NUROPB_URL before NUROPB_AMQP_URL", () => {
    const b = brokerUrl(undefined, {
      NUROPB_URL: "nats://n:4222/m",
      NUROPB_AMQP_URL: "amqp://h/v",
    });
    expect(b.kind).toBe("nats");
  });

  it("reads NATS and Redis URLs: their mesh, credentials and default mesh", () => {
    expect(brokerUrl("nats://ann:s3cret@n:4222/orders", {})).toEqual({
      kind: "nats",
      url: "nats://ann:s3cret@n:4222/orders",
      shown: "nats://ann:****@n:4222/orders",
      vhost: "orders",
      password: "s3cret",
      username: "ann",
    });
    expect(brokerUrl("tls://n:4222", {})).toMatchObject({ kind: "nats", vhost: "nuropb" });
    expect(brokerUrl("redis://:s3cret@r:6379/2?mesh=shop", {})).toMatchObject({
      kind: "redis",
      vhost: "shop",
      shown: "redis://:****@r:6379/2?mesh=shop",
    });
    expect(brokerUrl("rediss://r:6380", {})).toMatchObject({ kind: "redis", vhost: "nuropb" });
  });

  it("refuses other brokers for what needs RabbitMQ, saying why", () => {
    const err = usage(() =>
      brokerUrl("redis://:hunter22@r:6379/0", {}, { amqpFor: "`nuropb services`" }),
    );
    expect(err.message).toBe(
      "`nuropb services` works on RabbitMQ only: --url must be an amqp:// or amqps:// URL, got redis://:****@r:6379/0",
    );
  });
});

describe("managementUrl", () => {
  it("is undefined unless given, and must be http(s)", () => {
    expect(managementUrl(undefined, {})).toBeUndefined();
    expect(managementUrl(undefined, { NUROPB_MANAGEMENT_URL: "http://h:15672/api" })).toBe(
      "http://h:15672/api",
    );
    expect(usage(() => managementUrl("amqp://u:hunter22@h/api", {})).message).toBe(
      "--management-url must be an http:// or https:// URL, got amqp://u:****@h/api",
    );
  });
});

describe("JSON arguments", () => {
  it("parses objects and says what is wrong with anything else", () => {
    expect(jsonObject('{"a":[1,{"b":null}]}', "params")).toEqual({ a: [1, { b: null }] });
    expect(jsonObject(undefined, "params")).toEqual({});
    expect(usage(() => jsonObject("[1]", "params")).message).toBe(
      `params must be a JSON object like '{"key":"value"}', got an array`,
    );
    expect(usage(() => jsonObject("null", "--context")).message).toContain("got null");
    expect(usage(() => jsonObject("42", "--context")).message).toContain("got a number");
    const bad = usage(() => jsonObject("{id: 1}", "params"));
    expect(bad.message).toMatch(/^params is not valid JSON \(.+\): \{id: 1\}$/);
    expect(bad.hint).toContain("quote JSON");
  });

  it("takes any JSON value for an event and shortens long bad input", () => {
    expect(jsonValue('"text"', "event")).toBe("text");
    expect(jsonValue("[1,2]", "event")).toEqual([1, 2]);
    const long = `{${"x".repeat(100)}`;
    expect(usage(() => jsonValue(long, "event")).message).toMatch(/: \{x{56}\.\.\.$/);
  });
});

describe("numbers, names and topics", () => {
  it("accepts positive whole milliseconds and counts only", () => {
    expect(milliseconds("250", "--ttl")).toBe(250);
    for (const bad of ["0", "-5", "1.5", "1e3", "", "ten"]) {
      expect(usage(() => milliseconds(bad, "--ttl")).message).toBe(
        `--ttl must be a positive whole number of milliseconds, got '${bad}'`,
      );
    }
    expect(milliseconds("2147483647", "--ttl")).toBe(2_147_483_647);
    expect(usage(() => milliseconds("2147483648", "--connect-timeout")).message).toBe(
      "--connect-timeout must be at most 2147483647 milliseconds, got '2147483648'",
    );
    expect(positiveInteger("3", "--count")).toBe(3);
    expect(usage(() => positiveInteger("0", "--count")).message).toContain("--count");
  });

  it("checks service names, topics and topic patterns", () => {
    expect(serviceName("orders-v2.eu:1")).toBe("orders-v2.eu:1");
    expect(usage(() => serviceName("a b")).message).toContain("got 'a b'");
    expect(topic("orders.created")).toBe("orders.created");
    expect(usage(() => topic("orders.*")).message).toContain("no wildcards");
    expect(usage(() => topic("")).message).toContain("is not a topic");
    expect(topicPattern("orders.#")).toBe("orders.#");
    expect(topicPattern("*.created")).toBe("*.created");
    expect(usage(() => topicPattern("orders.cr*")).message).toContain("must stand alone");
    expect(usage(() => topicPattern("a..b")).message).toContain("empty word");
  });
});

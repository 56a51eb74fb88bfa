import type { ServiceDescription } from "@nuropb/core";
import pc from "picocolors";
import { describe, expect, it } from "vitest";
import {
  formatDescription,
  formatEvent,
  formatEventJson,
  formatParameters,
  formatServices,
  formatTable,
  schemaType,
} from "../src/index.ts";

const plain = pc.createColors(false);
const colored = pc.createColors(true);
const strip = (s: string): string =>
  s.replace(new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, "g"), "");

describe("formatTable", () => {
  it("aligns columns under upper-case headings, two spaces apart, the last one unpadded", () => {
    const text = formatTable(
      [{ title: "name" }, { title: "n" }, { title: "note" }],
      [
        ["a", "1", "first"],
        ["longer-name", "22", ""],
      ],
      plain,
    );
    expect(text).toBe(
      ["NAME         N   NOTE", "a            1   first", "longer-name  22", ""].join("\n"),
    );
  });

  it("measures plain text, so colours do not move the columns", () => {
    const columns = (c: typeof plain) => [
      { title: "name", style: (t: string) => c.cyan(t) },
      { title: "n" },
    ];
    const rows = [
      ["a", "1"],
      ["bbb", "2"],
    ];
    const text = formatTable(columns(colored), rows, colored);
    expect(text).toContain("\x1b[36m");
    expect(strip(text)).toBe(formatTable(columns(plain), rows, plain));
  });

  it("counts characters, not UTF-16 units", () => {
    expect(formatTable([{ title: "x" }, { title: "y" }], [["𝑥", "1"]], plain)).toBe("X  Y\n𝑥  1\n");
  });
});

describe("parameters", () => {
  it("shows JSON Schema types the way TypeScript would", () => {
    expect(schemaType({ type: "string" })).toBe("string");
    expect(schemaType({ type: ["string", "null"] })).toBe("string | null");
    expect(schemaType({ type: "array", items: { type: "integer" } })).toBe("integer[]");
    expect(schemaType({ type: "array", items: { enum: ["a", "b"] } })).toBe('("a" | "b")[]');
    expect(schemaType({ const: 3 })).toBe("3");
    expect(schemaType({ anyOf: [{ type: "string" }, { type: "number" }] })).toBe("string | number");
    expect(schemaType({})).toBe("any");
    expect(schemaType(undefined)).toBe("any");
  });

  it("lists properties, optional ones with '?', and 'any' when nothing is declared", () => {
    expect(
      formatParameters({
        type: "object",
        required: ["id"],
        properties: { id: { type: "string" }, limit: { type: "integer" } },
      }),
    ).toBe("id: string, limit?: integer");
    expect(formatParameters({ type: "object" })).toBe("any");
    expect(formatParameters({ type: "object", properties: {} })).toBe("any");
  });
});

const description: ServiceDescription = {
  service_name: "sandbox",
  service_version: "1.2.0",
  description: "A place to play",
  warnings: ["something to know"],
  encrypted_methods: true,
  public_key: "-----BEGIN PUBLIC KEY-----\n...",
  nacl_public_key: "abc=",
  methods: {
    test_method: { description: null, requires_encryption: false, parameters: { type: "object" } },
    save_secret: {
      description: "Keeps a note",
      requires_encryption: true,
      requires_authorization: true,
      parameters: {
        type: "object",
        required: ["note"],
        properties: { note: { type: "string" } },
      },
    },
  },
};

describe("formatDescription", () => {
  it("prints the heading, keys, warnings and a table of methods with AUTH and ENCRYPTED", () => {
    expect(formatDescription(description, plain)).toBe(
      [
        "sandbox v1.2.0",
        "  A place to play",
        "  encryption: public keys RSA and nacl, some methods require it",
        "  warning: something to know",
        "",
        "METHOD       PARAMETERS    AUTH  ENCRYPTED  DESCRIPTION",
        "save_secret  note: string  yes   yes        Keeps a note",
        "test_method  any           no    no",
        "",
      ].join("\n"),
    );
  });

  it("marks authorisation the service does not announce with '?' and explains it", () => {
    const text = formatDescription(description, plain, (m) => m === "save_secret");
    expect(text).toContain("test_method  any           ?     no");
    expect(text).toContain("AUTH ?: the service does not announce authorisation");
  });

  it("copes with a bare description", () => {
    expect(
      formatDescription(
        {
          service_name: null,
          service_version: null,
          description: null,
          warnings: [],
          encrypted_methods: false,
          public_key: null,
          methods: {},
        },
        plain,
      ),
    ).toBe("(unnamed service)\n  encryption: no public key\n\n  (no methods)\n");
  });
});

describe("services and events", () => {
  it("lists services with instances, ready and unacked", () => {
    expect(
      formatServices(
        [
          { service: "orders", queue: "nuropb-orders-sq", consumers: 2, ready: 0, unacked: 1 },
          {
            service: "billing-eu",
            queue: "nuropb-billing-eu-sq",
            consumers: 0,
            ready: 17,
            unacked: 0,
          },
        ],
        plain,
      ),
    ).toBe(
      [
        "SERVICE     INSTANCES  READY  UNACKED",
        "orders      2          0      1",
        "billing-eu  0          17     0",
        "",
      ].join("\n"),
    );
  });

  const event = {
    topic: "orders.created",
    event: { id: 7 },
    context: { user: "ann" },
    traceId: "t1",
    target: null,
    receivedAt: new Date("2024-05-06T07:08:09.123Z"),
  };

  it("prints an event as one readable line", () => {
    expect(formatEvent(event, plain)).toBe(
      '07:08:09.123  orders.created  {"id":7}  context {"user":"ann"}  trace t1\n',
    );
    expect(formatEvent({ ...event, context: {}, traceId: null, target: ["a", "b"] }, plain)).toBe(
      '07:08:09.123  orders.created  {"id":7}  target a,b\n',
    );
  });

  it("prints an event as one JSON line", () => {
    expect(JSON.parse(formatEventJson(event))).toEqual({
      topic: "orders.created",
      event: { id: 7 },
      context: { user: "ann" },
      trace_id: "t1",
      target: null,
      received_at: "2024-05-06T07:08:09.123Z",
    });
    expect(formatEventJson(event).endsWith("}\n")).toBe(true);
    expect(formatEventJson(event).split("\n")).toHaveLength(2);
  });
});

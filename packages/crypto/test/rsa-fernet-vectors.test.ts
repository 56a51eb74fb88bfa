import { constants, privateDecrypt } from "node:crypto";
import { describe, expect, it } from "vitest";
import { createFernet, createPayloadEncryptor, createServiceKeys } from "../src/index.ts";
import { fixture, text, utf8 } from "./helpers.ts";

interface WireMessage {
  properties: { headers: Record<string, string> };
  plaintext_body: string;
  plaintext_body_length: number;
  wire_body: string;
  wire_key_part: string;
  wire_token_part: string;
  fernet_token: string;
  fernet_timestamp: number;
  fernet_iv_hex: string;
}
interface VectorCase {
  id: string;
  message_type: "request" | "command";
  fernet_key: string;
  request: WireMessage;
  response: WireMessage | null;
}
interface Vectors {
  rsa: { private_key_pem: string; public_key_pem: string; key_size: number };
  cases: VectorCase[];
}

const vectors = fixture<Vectors>("rsa-fernet.json");
const serviceKeys = createServiceKeys({ rsa: vectors.rsa.private_key_pem });
const peer = { rsaPublicKeyPem: vectors.rsa.public_key_pem };
const bytes = (s: string): Uint8Array => Buffer.from(s, "latin1");

/** Decrypts a body by the Python layout rules, independently of the package's decoder. */
function decryptLikePython(wire: string): { keyText: string; token: string; plain: string } {
  const dot = wire.indexOf(".");
  const keyText = privateDecrypt(
    {
      key: vectors.rsa.private_key_pem,
      padding: constants.RSA_PKCS1_OAEP_PADDING,
      oaepHash: "sha256",
    },
    Buffer.from(wire.slice(0, dot), "base64"),
  ).toString("latin1");
  const token = Buffer.from(wire.slice(dot + 1), "base64").toString("latin1");
  return { keyText, token, plain: createFernet(keyText).decrypt(token).toString("utf8") };
}

describe("rsa-fernet vectors from Python NuroPb 0.1.8", () => {
  it("has six cases and the expected key", () => {
    expect(vectors.cases.map((c) => c.id)).toEqual([
      "request-ascii",
      "request-unicode",
      "request-5kb",
      "command",
      "error-validation",
      "error-unknown-method",
    ]);
    expect(serviceKeys.rsa?.modulusBits).toBe(2048);
  });

  it("announces the public key exactly as Python's describe does", () => {
    const service = createPayloadEncryptor({ keys: serviceKeys });
    expect(service.publicKeys.rsaPem).toBe(vectors.rsa.public_key_pem);
  });

  describe.each(vectors.cases)("$id", (c) => {
    it("the service opens Python's request to the recorded plaintext", () => {
      const service = createPayloadEncryptor({ keys: serviceKeys });
      const opened = service.openRequest(bytes(c.request.wire_body), c.request.properties.headers);
      expect(text(opened.plain)).toBe(c.request.plaintext_body);
      expect(opened.plain.length).toBe(c.request.plaintext_body_length);
      expect(opened.replyKey.suite).toBe("rsa-fernet");
    });

    it.each(["request", "response"] as const)(
      "Fernet re-encryption of the %s reproduces the token",
      (which) => {
        const m = c[which];
        if (m === null) {
          expect(c.message_type).toBe("command");
          return;
        }
        const token = createFernet(c.fernet_key).encrypt(utf8(m.plaintext_body), {
          now: m.fernet_timestamp * 1000,
          iv: Buffer.from(m.fernet_iv_hex, "hex"),
        });
        expect(token).toBe(m.fernet_token);
        expect(Buffer.from(token, "latin1").toString("base64")).toBe(m.wire_token_part);
        expect(`${m.wire_key_part}.${m.wire_token_part}`).toBe(m.wire_body);
      },
    );

    it("a client that kept the key opens Python's response, ignoring the key part", () => {
      if (c.response === null) {
        expect(c.message_type).toBe("command");
        return;
      }
      // Our client seals a request; we then swap in the vector's key to play the kept key.
      const client = createPayloadEncryptor({ suites: ["rsa-fernet"] });
      const response = c.response;
      const service = createPayloadEncryptor({ keys: serviceKeys });
      const replyKey = service.openRequest(
        bytes(c.request.wire_body),
        c.request.properties.headers,
      ).replyKey;
      // The service's reply key holds the request's Fernet key, as the client's would.
      expect(
        text(client.openResponse(bytes(response.wire_body), response.properties.headers, replyKey)),
      ).toBe(response.plaintext_body);
      // The key part is ignored: a response whose key part is someone else's still opens.
      const otherKeyPart = vectors.cases.find((o) => o.id !== c.id)?.request.wire_key_part ?? "";
      const swapped = `${otherKeyPart}.${response.wire_token_part}`;
      expect(text(client.openResponse(bytes(swapped), {}, replyKey))).toBe(response.plaintext_body);
      // The response key part is wrapped with py-peer's own key: it decrypts to the same key.
      expect(decryptLikePython(response.wire_body).keyText).toBe(c.fernet_key);
    });

    it("our sealed request decrypts by the Python layout rules", () => {
      const client = createPayloadEncryptor({ rsaKeyReuseMs: 0 });
      const sealed = client.sealRequest(utf8(c.request.plaintext_body), peer);
      expect(sealed.headers).toEqual({});
      const wire = Buffer.from(sealed.body).toString("latin1");
      expect(wire).toMatch(/^[A-Za-z0-9+/]+={0,2}\.[A-Za-z0-9+/]+={0,2}$/);
      const [first, second] = wire.split(".") as [string, string];
      expect(first.length).toBe(344);
      expect(second.startsWith("Z0FBQUFB")).toBe(true);
      const { keyText, token, plain } = decryptLikePython(wire);
      expect(keyText).toMatch(/^[A-Za-z0-9_-]{43}=$/);
      expect(token.startsWith("gAAAAA")).toBe(true);
      expect(plain).toBe(c.request.plaintext_body);
    });

    it("our service's response decrypts with the request's key by the Python rules", () => {
      if (c.response === null) return expect(c.message_type).toBe("command");
      const service = createPayloadEncryptor({ keys: serviceKeys });
      const { replyKey } = service.openRequest(
        bytes(c.request.wire_body),
        c.request.properties.headers,
      );
      const sealed = service.sealResponse(utf8(c.response.plaintext_body), replyKey);
      expect(sealed.headers).toEqual({});
      const wire = Buffer.from(sealed.body).toString("latin1");
      const token = Buffer.from(wire.slice(wire.indexOf(".") + 1), "base64").toString("latin1");
      expect(createFernet(c.fernet_key).decrypt(token).toString("utf8")).toBe(
        c.response.plaintext_body,
      );
      expect(decryptLikePython(wire).plain).toBe(c.response.plaintext_body);
      return undefined;
    });
  });

  it("refuses Python's request when maxAgeMs is exceeded, accepts it within", () => {
    const c = vectors.cases[0];
    if (c === undefined) throw new Error("no cases");
    const sentMs = c.request.fernet_timestamp * 1000;
    const at = (nowMs: number) => createPayloadEncryptor({ keys: serviceKeys, now: () => nowMs });
    expect(
      text(
        at(sentMs + 5_000).openRequest(bytes(c.request.wire_body), {}, { maxAgeMs: 10_000 }).plain,
      ),
    ).toBe(c.request.plaintext_body);
    expect(() =>
      at(sentMs + 20_000).openRequest(bytes(c.request.wire_body), {}, { maxAgeMs: 10_000 }),
    ).toThrow(/expired/);
  });
});

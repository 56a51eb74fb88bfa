import * as nodeCrypto from "node:crypto";
import { describe, expect, it, vi } from "vitest";
import { createPayloadEncryptor, createServiceKeys } from "../src/index.ts";
import { text, utf8 } from "./helpers.ts";

// Count RSA operations without changing them.
vi.mock("node:crypto", async (importOriginal) => {
  const actual = await importOriginal<typeof nodeCrypto>();
  return {
    ...actual,
    privateDecrypt: vi.fn(actual.privateDecrypt),
    publicEncrypt: vi.fn(actual.publicEncrypt),
  };
});

const keys = createServiceKeys({ rsa: true });

describe("rsa-fernet performance caches", () => {
  it("a sender wraps one key per target for many messages; the receiver unwraps it once", () => {
    const service = createPayloadEncryptor({ keys });
    const client = createPayloadEncryptor();
    const peer = { rsaPublicKeyPem: service.publicKeys.rsaPem };
    vi.mocked(nodeCrypto.publicEncrypt).mockClear();
    vi.mocked(nodeCrypto.privateDecrypt).mockClear();
    for (let i = 0; i < 50; i++) {
      const sealed = client.sealRequest(utf8(`m${i}`), peer);
      const opened = service.openRequest(sealed.body, sealed.headers);
      expect(text(opened.plain)).toBe(`m${i}`);
      const reply = service.sealResponse(utf8(`r${i}`), opened.replyKey);
      expect(text(client.openResponse(reply.body, reply.headers, sealed.replyKey))).toBe(`r${i}`);
    }
    expect(nodeCrypto.publicEncrypt).toHaveBeenCalledTimes(1);
    expect(nodeCrypto.privateDecrypt).toHaveBeenCalledTimes(1);
  });

  it("the unwrap cache is bounded (least recently used goes first)", () => {
    const service = createPayloadEncryptor({ keys, rsaUnwrapCacheSize: 2 });
    const client = createPayloadEncryptor({ rsaKeyReuseMs: 0 });
    const peer = { rsaPublicKeyPem: service.publicKeys.rsaPem };
    const [a, b, c] = [1, 2, 3].map((i) => client.sealRequest(utf8(`m${i}`), peer));
    if (a === undefined || b === undefined || c === undefined) throw new Error("unreachable");
    vi.mocked(nodeCrypto.privateDecrypt).mockClear();
    for (const m of [a, b, a, c, a, b]) service.openRequest(m.body, m.headers);
    // a, b miss; a hits; c misses and evicts b; a hits; b misses again.
    expect(nodeCrypto.privateDecrypt).toHaveBeenCalledTimes(4);
  });

  it("with reuse disabled every message gets a fresh key, as Python does", () => {
    const client = createPayloadEncryptor({ rsaKeyReuseMs: 0 });
    const peer = { rsaPublicKeyPem: keys.rsa?.publicKeyPem ?? null };
    vi.mocked(nodeCrypto.publicEncrypt).mockClear();
    for (let i = 0; i < 5; i++) client.sealRequest(utf8("x"), peer);
    expect(nodeCrypto.publicEncrypt).toHaveBeenCalledTimes(5);
  });
});

import { createPayloadEncryptor, createServiceKeys } from "@nuropb/crypto";
import { expect, it } from "vitest";
import { importSealingKey, seal } from "../src/index.ts";

const keys = createServiceKeys({ rsa: true });
const service = createPayloadEncryptor({ keys, suites: ["rsa-fernet"] });
const pem = service.publicKeys.rsaPem as string;
const text = new TextEncoder();
const utf8 = new TextDecoder();

it("a body sealed with WebCrypto opens with @nuropb/crypto, and its sealed answer opens here", async () => {
  const key = await importSealingKey(pem);
  const body = JSON.stringify({ tag: "request", params: { text: "héllo ✓" } });
  const sealed = await seal(body, key);
  // The wire shape of PROTOCOL.md §10.3: 344 characters of RSA-2048, then the Fernet token
  // base64-encoded a second time ("gAAAAA…" -> "Z0FBQUFB…").
  const [wrapped, token] = sealed.body.split(".");
  expect(wrapped).toHaveLength(344);
  expect(token?.startsWith("Z0FBQUFB")).toBe(true);

  const opened = service.openRequest(
    text.encode(sealed.body),
    { encrypted: "yes" },
    { maxAgeMs: 60_000 },
  );
  expect(utf8.decode(opened.plain)).toBe(body);

  const answer = service.sealResponse(
    text.encode('{"tag":"response","result":"ok ✓"}'),
    opened.replyKey,
  );
  expect(await sealed.replyKey.open(utf8.decode(answer.body))).toBe(
    '{"tag":"response","result":"ok ✓"}',
  );
});

it("makes a standard Fernet token: version 0x80, the time in seconds, a fresh IV", async () => {
  const key = await importSealingKey(pem);
  const at = Date.UTC(2030, 0, 1);
  const one = await seal("plain text", key, () => at);
  const two = await seal("plain text", key, () => at);
  const tokenOf = (body: string): Uint8Array => {
    const tokenText = atob(body.split(".")[1] as string);
    expect(tokenText).toMatch(/^gAAAAA[A-Za-z0-9_-]+=*$/);
    return Uint8Array.from(atob(tokenText.replaceAll("-", "+").replaceAll("_", "/")), (c) =>
      c.charCodeAt(0),
    );
  };
  const t1 = tokenOf(one.body);
  const t2 = tokenOf(two.body);
  expect(t1[0]).toBe(0x80);
  expect(new DataView(t1.buffer).getBigUint64(1)).toBe(BigInt(at / 1000));
  expect(t1.subarray(9, 25)).not.toEqual(t2.subarray(9, 25));
  expect(utf8.decode(service.openRequest(text.encode(one.body), { encrypted: "yes" }).plain)).toBe(
    "plain text",
  );
});

it("refuses an answer that was changed or sealed for another call", async () => {
  const key = await importSealingKey(pem);
  const a = await seal("a", key);
  const b = await seal("b", key);
  const openedB = service.openRequest(text.encode(b.body), { encrypted: "yes" });
  const answerB = utf8.decode(service.sealResponse(text.encode("for b"), openedB.replyKey).body);
  await expect(a.replyKey.open(answerB)).rejects.toThrow(/tampered/);
  await expect(b.replyKey.open(answerB)).resolves.toBe("for b");
  await expect(b.replyKey.open("no dot")).rejects.toThrow(TypeError);
  await expect(b.replyKey.open(`${answerB.split(".")[0] as string}.!!!`)).rejects.toThrow(
    TypeError,
  );
});

it("refuses a key that is not a PEM public key", async () => {
  await expect(
    importSealingKey("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----"),
  ).rejects.toThrow(/PUBLIC KEY/);
  await expect(
    importSealingKey("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"),
  ).rejects.toThrow(/cannot be read/);
});

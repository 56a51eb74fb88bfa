import { generateKeyPairSync } from "node:crypto";
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import nacl from "tweetnacl";
import { afterAll, describe, expect, it } from "vitest";
import type { Logger } from "@nuropb/protocol";
import {
  createPayloadEncryptor,
  createServiceKeys,
  exportRsaPrivateKeyPem,
  generateNaclKeyPair,
  generateRsaKeyPair,
  loadOrCreateKeyFile,
  loadRsaKeyPair,
  loadServiceKeys,
  naclKeyId,
  naclKeyPairFromSecretKey,
  parseRsaPublicKey,
  parseServiceKeys,
  saveServiceKeys,
  serializeServiceKeys,
} from "../src/index.ts";
import { fixture, text, utf8 } from "./helpers.ts";

const vectors = fixture<{ rsa: { private_key_pem: string; public_key_pem: string } }>(
  "rsa-fernet.json",
);
const dir = await mkdtemp(join(tmpdir(), "nuropb-crypto-keys-"));
afterAll(() => rm(dir, { recursive: true, force: true }));

function recordingLogger(lines: string[]): Logger {
  const logger: Logger = {
    debug: (m) => lines.push(`debug ${m}`),
    info: (m) => lines.push(`info ${m}`),
    warn: (m) => lines.push(`warn ${m}`),
    error: (m) => lines.push(`error ${m}`),
    child: () => logger,
  };
  return logger;
}

describe("RSA keys", () => {
  it("load PKCS#8 and PKCS#1 (TraditionalOpenSSL) PEM to the same key", () => {
    const pkcs8 = loadRsaKeyPair(vectors.rsa.private_key_pem);
    expect(pkcs8.publicKeyPem).toBe(vectors.rsa.public_key_pem);
    const pkcs1Pem = exportRsaPrivateKeyPem(pkcs8, "pkcs1");
    expect(pkcs1Pem).toMatch(/^-----BEGIN RSA PRIVATE KEY-----\n/);
    expect(loadRsaKeyPair(pkcs1Pem).publicKeyPem).toBe(vectors.rsa.public_key_pem);
    expect(exportRsaPrivateKeyPem(pkcs8)).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
  });

  it("generate 2048-bit keys with an SPKI public PEM", () => {
    const pair = generateRsaKeyPair();
    expect(pair.modulusBits).toBe(2048);
    expect(pair.publicKeyPem).toMatch(
      /^-----BEGIN PUBLIC KEY-----\n[\s\S]+-----END PUBLIC KEY-----\n$/,
    );
    expect(parseRsaPublicKey(pair.publicKeyPem).asymmetricKeyDetails?.modulusLength).toBe(2048);
    expect(() => generateRsaKeyPair(512)).toThrow(/at least 1024/);
  });

  it("say what was wrong with bad input", () => {
    expect(() => loadRsaKeyPair("hello")).toThrow(/must be PEM/);
    expect(() => loadRsaKeyPair(vectors.rsa.public_key_pem)).toThrow(/holds a PUBLIC KEY/);
    const damaged = vectors.rsa.private_key_pem.replace(/\n[A-Za-z0-9+/]{64}\n/, "\nAAAA\n");
    expect(() => loadRsaKeyPair(damaged)).toThrow(
      /Cannot read the RSA private key PEM \(PRIVATE KEY\)/,
    );
    const ed = generateKeyPairSync("ed25519")
      .privateKey.export({ type: "pkcs8", format: "pem" })
      .toString();
    expect(() => loadRsaKeyPair(ed)).toThrow(
      /Expected a private RSA key, got a private ed25519 key/,
    );
    const small = generateKeyPairSync("rsa", { modulusLength: 768 }).privateKey.export({
      type: "pkcs8",
      format: "pem",
    });
    expect(() => loadRsaKeyPair(small.toString())).toThrow(/too small: 768 bits/);
    expect(() => parseRsaPublicKey(vectors.rsa.private_key_pem)).toThrow(/holds a PRIVATE KEY/);
    expect(() =>
      parseRsaPublicKey("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
    ).toThrow(/Cannot read the RSA public key PEM/);
    expect(() => parseRsaPublicKey("")).toThrow(TypeError);
  });
});

describe("nacl keys", () => {
  it("derive the public key and kid from the secret key", () => {
    const pair = generateNaclKeyPair();
    const again = naclKeyPairFromSecretKey(Buffer.from(pair.secretKey).toString("base64"));
    expect(Buffer.from(again.publicKey)).toEqual(Buffer.from(pair.publicKey));
    expect(again.kid).toBe(pair.kid);
    expect(pair.kid).toBe(naclKeyId(nacl.box.keyPair.fromSecretKey(pair.secretKey).publicKey));
  });

  it("refuse the wrong size or non-base64", () => {
    expect(() => naclKeyPairFromSecretKey(new Uint8Array(31))).toThrow(/32 bytes \(got 31\)/);
    expect(() => naclKeyPairFromSecretKey("not base64!")).toThrow(/base64/);
    expect(() => createServiceKeys({ nacl: "AAAA" })).toThrow(/32 bytes \(got 3\)/);
  });
});

describe("createServiceKeys", () => {
  it("generates both parts without options, only the named parts with options", () => {
    const both = createServiceKeys();
    expect(both.rsa).not.toBeNull();
    expect(both.nacl).not.toBeNull();
    const rsaOnly = createServiceKeys({ rsa: vectors.rsa.private_key_pem });
    expect(rsaOnly.nacl).toBeNull();
    expect(rsaOnly.rsa?.publicKeyPem).toBe(vectors.rsa.public_key_pem);
    expect(createServiceKeys({ nacl: true }).rsa).toBeNull();
  });
});

describe("key files", () => {
  it("serialise and parse both parts", () => {
    const keys = createServiceKeys({ rsa: vectors.rsa.private_key_pem, nacl: true });
    const textForm = serializeServiceKeys(keys);
    expect(JSON.parse(textForm)).toMatchObject({ format: "nuropb-keys", version: 1 });
    const back = parseServiceKeys(textForm);
    expect(back.rsa?.publicKeyPem).toBe(vectors.rsa.public_key_pem);
    expect(back.nacl?.kid).toBe(keys.nacl?.kid);
    expect(
      parseServiceKeys(serializeServiceKeys(keys, { rsaFormat: "pkcs1" })).rsa?.publicKeyPem,
    ).toBe(vectors.rsa.public_key_pem);
  });

  it("accept a bare PEM private key, as Python examples store it", async () => {
    const path = join(dir, "python.pem");
    await writeFile(
      path,
      exportRsaPrivateKeyPem(loadRsaKeyPair(vectors.rsa.private_key_pem), "pkcs1"),
      {
        mode: 0o600,
      },
    );
    const keys = await loadServiceKeys(path);
    expect(keys.rsa?.publicKeyPem).toBe(vectors.rsa.public_key_pem);
    expect(keys.nacl).toBeNull();
  });

  it("refuse content that is not key material, naming the file", async () => {
    expect(() => parseServiceKeys("{}")).toThrow(/"format": "nuropb-keys"/);
    expect(() => parseServiceKeys("garbage")).toThrow(/neither PEM nor JSON/);
    expect(() => parseServiceKeys('{"format":"nuropb-keys","version":2}')).toThrow(/version 2/);
    const path = join(dir, "bad.json");
    await writeFile(path, '{"format":"nuropb-keys","version":1,"nacl_secret_key":"AAAA"}', {
      mode: 0o600,
    });
    await expect(loadServiceKeys(path)).rejects.toThrow(
      /bad\.json: nacl secret key must be 32 bytes/,
    );
    await expect(loadOrCreateKeyFile(path)).rejects.toThrow(TypeError);
  });

  it("loadOrCreateKeyFile creates a 0600 file once, then loads the same keys", async () => {
    const path = join(dir, "service.keys.json");
    const lines: string[] = [];
    const created = await loadOrCreateKeyFile(path, { logger: recordingLogger(lines) });
    expect(created.rsa).not.toBeNull();
    expect(created.nacl).not.toBeNull();
    expect(lines).toEqual(["info created key file"]);
    if (process.platform !== "win32") expect((await stat(path)).mode & 0o777).toBe(0o600);
    const loaded = await loadOrCreateKeyFile(path);
    expect(loaded.rsa?.publicKeyPem).toBe(created.rsa?.publicKeyPem);
    expect(loaded.nacl?.kid).toBe(created.nacl?.kid);
    // Keys from the file work across "instances".
    const a = createPayloadEncryptor({ keys: created });
    const b = createPayloadEncryptor({ keys: loaded });
    const sealed = createPayloadEncryptor().sealRequest(utf8("hi"), {
      naclPublicKey: a.publicKeys.nacl,
    });
    expect(text(b.openRequest(sealed.body, sealed.headers).plain)).toBe("hi");
  });

  it("loadOrCreateKeyFile makes a missing folder, private to the owner", async () => {
    const folder = join(dir, "secrets", "orders");
    const keys = await loadOrCreateKeyFile(join(folder, "orders.keys.json"), { rsa: false });
    expect(keys.nacl).not.toBeNull();
    if (process.platform !== "win32") expect((await stat(folder)).mode & 0o777).toBe(0o700);
  });

  it("loadOrCreateKeyFile is race-free: concurrent starts share one key set", async () => {
    const path = join(dir, "race.keys.json");
    const all = await Promise.all([1, 2, 3].map(() => loadOrCreateKeyFile(path, { rsa: false })));
    expect(new Set(all.map((k) => k.nacl?.kid)).size).toBe(1);
    expect(all[0]?.rsa).toBeNull();
    expect(JSON.parse(await readFile(path, "utf8"))).toMatchObject({ rsa_private_key_pem: null });
  });

  it("saveServiceKeys refuses to overwrite unless asked; warns about loose permissions", async () => {
    const path = join(dir, "save.keys.json");
    const keys = createServiceKeys({ nacl: true });
    await saveServiceKeys(path, keys);
    await expect(saveServiceKeys(path, createServiceKeys({ nacl: true }))).rejects.toMatchObject({
      code: "EEXIST",
    });
    const replacement = createServiceKeys({ nacl: true });
    await saveServiceKeys(path, replacement, { overwrite: true });
    expect((await loadServiceKeys(path)).nacl?.kid).toBe(replacement.nacl?.kid);
    if (process.platform !== "win32") {
      const loose = join(dir, "loose.keys.json");
      await writeFile(loose, serializeServiceKeys(keys), { mode: 0o600 });
      await chmod(loose, 0o644);
      const lines: string[] = [];
      await loadServiceKeys(loose, { logger: recordingLogger(lines) });
      expect(lines).toEqual(["warn key file is readable by group or others"]);
    }
  });
});

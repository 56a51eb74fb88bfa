import { execFile } from "node:child_process";
import { createCipheriv, createDecipheriv, createHmac } from "node:crypto";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { promisify } from "node:util";
import { NuropbTransportError } from "@nuropb/protocol";
import { afterAll, afterEach, describe, expect, it, vi } from "vitest";
import nacl from "tweetnacl";
import { CipherPool, spawnCipherThread } from "../src/cipher-pool.ts";
import { createFernet, fernetKeyBytes, generateFernetKey } from "../src/fernet.ts";
import { KERNELS } from "../src/kernels.ts";
import {
  DecryptFailure,
  createPayloadEncryptor,
  createServiceKeys,
  decryptFailureReason,
  naclKeyPairFromSecretKey,
  type PayloadEncryptor,
  type ReplyKey,
} from "../src/index.ts";
import {
  fixture,
  mutate,
  nativeVectorKey,
  prng,
  text,
  utf8,
  type NativeVectorKeys,
} from "./helpers.ts";

interface NativeVectors extends NativeVectorKeys {
  requestHeaders: Record<string, string>;
  requestPlain: string;
  requestBody: string;
}

const execFileAsync = promisify(execFile);
const pools: CipherPool[] = [];
afterEach(() => {
  vi.restoreAllMocks();
});
const encryptors: PayloadEncryptor[] = [];
afterAll(async () => {
  await Promise.all([...pools, ...encryptors].map((p) => p.close()));
});

function pool(threads = 1): CipherPool {
  const p = new CipherPool(threads);
  pools.push(p);
  return p;
}

function encryptor(options: Parameters<typeof createPayloadEncryptor>[0]): PayloadEncryptor {
  const e = createPayloadEncryptor(options);
  encryptors.push(e);
  return e;
}

/** What an open did: its plaintext, or its error's class, reason and text. */
async function outcome(open: () => Promise<Uint8Array> | Uint8Array): Promise<string> {
  try {
    return `ok ${Buffer.from(await open()).toString("hex")}`;
  } catch (err) {
    const e = err as Error & { description?: string };
    return `${e.constructor.name} ${String(decryptFailureReason(err))} ${e.description ?? e.message}`;
  }
}

describe("CipherPool: the kernels on worker threads", () => {
  it("box and unbox are tweetnacl's secretbox; a damaged box opens to null", async () => {
    const p = pool();
    const key = nacl.randomBytes(32);
    const nonce = nacl.randomBytes(24);
    const plain = nacl.randomBytes(300);
    const m = new Uint8Array(32 + plain.length);
    m.set(plain, 32);
    const c = await p.box(key, nonce, m);
    expect(p.threadCount).toBe(1); // done on a thread, not here
    expect(Buffer.from(c.subarray(16))).toEqual(Buffer.from(nacl.secretbox(plain, nonce, key)));
    const opened = await p.unbox(key, nonce, c);
    expect(Buffer.from(opened?.subarray(32) ?? [])).toEqual(Buffer.from(plain));
    const damaged = Uint8Array.from(c);
    damaged[40] = (damaged[40] ?? 0) ^ 1;
    expect(await p.unbox(key, nonce, damaged)).toBeNull();
    expect(await p.unbox(nacl.randomBytes(32), nonce, c)).toBeNull();
  });

  it("Fernet tokens sealed on a thread are the ones sealed here, byte for byte", async () => {
    const p = pool();
    const fernet = createFernet(generateFernetKey());
    const key = fernetKeyBytes(fernet);
    const here = Buffer.from(fernet.encrypt("hello, thread", { now: 1_700_000_000_000 }), "base64");
    // The same IV and time: the thread must produce the same token.
    const token = Buffer.alloc(here.length);
    here.copy(token, 0, 0, 25);
    const sealed = await p.fernetSeal(key, utf8("hello, thread"), token);
    expect(Buffer.from(sealed)).toEqual(here);
    expect(text((await p.fernetOpen(key, sealed)) as Uint8Array)).toBe("hello, thread");
  });

  it("Fernet opens name the failing stage: the MAC, or the padding after a valid MAC", async () => {
    const p = pool();
    const fernet = createFernet(generateFernetKey());
    const key = fernetKeyBytes(fernet);
    const token = Buffer.from(fernet.encrypt("x"), "base64");
    const forged = Buffer.from(token);
    forged[30] = (forged[30] ?? 0) ^ 1;
    expect(await p.fernetOpen(key, forged)).toBe("mac");
    // A well-signed token whose plaintext block ends in a bad padding byte.
    const iv = Buffer.alloc(16, 7);
    const cipher = createCipheriv("aes-128-cbc", key.subarray(16), iv).setAutoPadding(false);
    const block = Buffer.concat([cipher.update(Buffer.alloc(16, 0x00)), cipher.final()]);
    const head = Buffer.concat([Buffer.from([0x80, 0, 0, 0, 0, 0, 0, 0, 1]), iv, block]);
    const mac = createHmac("sha256", key.subarray(0, 16)).update(head).digest();
    const badPadding = Buffer.concat([head, mac]);
    expect(await p.fernetOpen(key, badPadding)).toBe("padding");
    expect(KERNELS.fernetOpen(badPadding, key)).toBe("padding");
  });

  it("answers every op of a burst far larger than one batch, each with its own result", async () => {
    const p = pool(2);
    const key = nacl.randomBytes(32);
    // Sizes from 0 to 699 bytes, and a few over the 1 MB a batch holds before it must leave.
    const jobs = Array.from({ length: 1000 }, (_, i) => {
      const nonce = nacl.randomBytes(24);
      const plain = nacl.randomBytes(i % 250 === 7 ? 1_500_000 : i % 700);
      const m = new Uint8Array(32 + plain.length);
      m.set(plain, 32);
      return { nonce, plain, sealed: p.box(key, nonce, m) };
    });
    let i = 0;
    for (const job of jobs) {
      const c = await job.sealed;
      // Buffer#equals, not toEqual: toEqual walks a 1.5 MB buffer byte by byte, for seconds.
      const same = Buffer.from(c.subarray(16)).equals(nacl.secretbox(job.plain, job.nonce, key));
      expect(same, `op ${i++} (${job.plain.length} bytes)`).toBe(true);
    }
  }, 20_000);

  it("close() lets the batches handed over finish; later ops run here, starting no thread", async () => {
    const p = pool();
    const key = nacl.randomBytes(32);
    const m = new Uint8Array(64);
    const nonces = Array.from({ length: 200 }, () => nacl.randomBytes(24));
    const burst = nonces.map((n) => p.box(key, n, m));
    await new Promise((r) => setImmediate(r)); // the first batches are out
    await p.close();
    const sealed = await Promise.all(burst);
    sealed.forEach((c, i) => {
      expect(Buffer.from(c.subarray(16))).toEqual(
        Buffer.from(nacl.secretbox(m.subarray(32), nonces[i] as Uint8Array, key)),
      );
    });
    expect(p.threadCount).toBe(0);
    const nonce = nacl.randomBytes(24);
    const c = await p.box(key, nonce, m);
    expect(await p.unbox(key, nonce, c)).not.toBeNull();
    expect(p.threadCount).toBe(0);
    expect(p.close()).toBe(p.close()); // twice: the same close, not an early one
  });

  it("a thread that dies fails its ops with a retryable NuropbTransportError", async () => {
    // A "thread" that never answers and exits: what a crash looks like from here.
    const p = new CipherPool(
      1,
      () => new Worker("setTimeout(() => process.exit(3), 50)", { eval: true, execArgv: [] }),
    );
    pools.push(p);
    const err = await p.box(nacl.randomBytes(32), nacl.randomBytes(24), new Uint8Array(40)).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(NuropbTransportError);
    expect((err as NuropbTransportError).retryable).toBe(true);
    expect((err as Error).message).toMatch(/cipher thread exited \(code 3\)/);
  });

  it("after a thread dies, ops that waited for it go to a new thread", async () => {
    // The first "thread" answers one batch (every op failed), then exits on the next.
    const flaky = [
      'const { parentPort } = require("node:worker_threads");',
      "let batches = 0;",
      'parentPort.on("message", (buf) => {',
      "  if (++batches > 1) process.exit(4);",
      "  const count = new DataView(buf).getUint32(0, true);",
      "  const out = new ArrayBuffer(4 + 5 * count);",
      "  const v = new DataView(out);",
      "  v.setUint32(0, count, true);",
      "  for (let i = 0; i < count; i++) v.setUint8(4 + 5 * i, 3);",
      "  parentPort.postMessage(out, [out]);",
      "});",
    ].join("\n");
    let spawned = 0;
    const p = new CipherPool(1, () =>
      ++spawned === 1 ? new Worker(flaky, { eval: true, execArgv: [] }) : spawnCipherThread(),
    );
    pools.push(p);
    const key = nacl.randomBytes(32);
    const nonce = nacl.randomBytes(24);
    const m = new Uint8Array(40);
    await expect(p.box(key, nonce, m)).rejects.toThrow(/a cipher operation failed \(status 3\)/);
    const lost = p.box(key, nonce, m).then(
      () => undefined,
      (e: unknown) => e,
    );
    await new Promise((r) => setImmediate(r)); // that batch is out; the next op waits behind it
    const waiting = p.box(key, nonce, m);
    const err = await lost;
    expect(err).toBeInstanceOf(NuropbTransportError);
    expect((err as Error).message).toMatch(/exited \(code 4\)/);
    const c = await waiting;
    expect(Buffer.from(c.subarray(16))).toEqual(
      Buffer.from(nacl.secretbox(m.subarray(32), nonce, key)),
    );
    expect(spawned).toBe(2);
    expect(p.threadCount).toBe(1);
  });

  // A thread that cannot start: spawning throws (Node's permission model, a bundle without
  // tweetnacl on disk), or the thread fails as it starts (its first op is then lost, retryably).
  for (const [how, spawn, firstLost] of [
    [
      "spawning throws",
      () => {
        throw new Error("Access to this API has been restricted");
      },
      false,
    ],
    [
      "the thread fails as it starts",
      () => new Worker('throw new Error("cannot start here")', { eval: true, execArgv: [] }),
      true,
    ],
  ] as const) {
    it(`where no thread can start (${how}), ops run here from then on`, async () => {
      let spawned = 0;
      const p = new CipherPool(2, () => {
        spawned++;
        return spawn();
      });
      pools.push(p);
      const key = nacl.randomBytes(32);
      const nonce = nacl.randomBytes(24);
      const m = new Uint8Array(40);
      const first = await p.box(key, nonce, m).then(
        () => undefined,
        (e: unknown) => e,
      );
      if (firstLost) expect(first).toBeInstanceOf(NuropbTransportError);
      else expect(first).toBeUndefined();
      const c = await p.box(key, nonce, m);
      expect(await p.unbox(key, nonce, c)).not.toBeNull();
      expect(spawned).toBe(1); // tried once, then no more
      expect(p.threadCount).toBe(0);
    });
  }

  it("copies inputs when an op is made, and gives each result a buffer of its own", async () => {
    const p = pool();
    const key = nacl.randomBytes(32);
    const nonce = nacl.randomBytes(24);
    const m = Buffer.alloc(32 + 5); // a Buffer: its slice() is a view, not a copy
    m.set(utf8("first"), 32);
    const sealing = p.box(key, nonce, m);
    m.set(utf8("XXXXX"), 32); // the caller reuses its buffer before the batch leaves
    const c = await sealing;
    const opened = await Promise.all([p.unbox(key, nonce, c), p.unbox(key, nonce, c)]);
    for (const o of opened) {
      expect(text((o as Uint8Array).subarray(32))).toBe("first");
      expect((o as Uint8Array).buffer.byteLength).toBe((o as Uint8Array).length);
    }
  });
});

/**
 * A child process that seals and opens on cipher threads and never calls close(): it must end
 * on its own once nothing is pending (an idle thread keeps no process alive).
 */
describe("a process using cipher threads", () => {
  it("exits when its work is done, without close()", async () => {
    const script = [
      'import { createPayloadEncryptor, createServiceKeys } from "@nuropb/crypto";',
      "const keys = createServiceKeys({ rsa: false, nacl: true });",
      "const service = createPayloadEncryptor({ keys, cipherThreads: 1 });",
      "const client = createPayloadEncryptor({ cipherThreads: 1 });",
      "const peer = { naclPublicKey: service.publicKeys.nacl };",
      'const sealed = await client.sealRequestAsync(new TextEncoder().encode("hi"), peer);',
      "const opened = await service.openRequestAsync(sealed.body, sealed.headers);",
      "console.log(new TextDecoder().decode(opened.plain));",
    ].join("\n");
    const root = fileURLToPath(new URL("../../..", import.meta.url));
    const { stdout } = await execFileAsync(
      process.execPath,
      ["--import", "tsx", "--conditions=@nuropb/source", "--input-type=module", "-e", script],
      { cwd: root, timeout: 30_000 },
    );
    expect(stdout.trim()).toBe("hi");
  }, 40_000);
});

describe("PayloadEncryptor with cipherThreads: the *Async methods", () => {
  const keys = createServiceKeys({ rsa: true, nacl: true });
  const now = 1_700_000_000_000;
  const clock = { ms: now };
  const options = { keys, now: () => clock.ms };
  const service = encryptor(options);
  const threadedService = encryptor({ ...options, cipherThreads: 1 });
  const client = encryptor({ now: () => clock.ms });
  const threadedClient = encryptor({ now: () => clock.ms, cipherThreads: 2 });
  const peer = {
    rsaPublicKeyPem: service.publicKeys.rsaPem,
    naclPublicKey: service.publicKeys.nacl,
    nativePublicKey: service.publicKeys.native,
  };

  it("refuses a cipherThreads that is not an integer from 0 to 16", () => {
    for (const bad of [-1, 1.5, 17, NaN, "2"]) {
      expect(() => createPayloadEncryptor({ cipherThreads: bad as number })).toThrow(
        /cipherThreads must be an integer from 0 to 16/,
      );
    }
  });

  for (const suite of ["x25519-aes-gcm", "nacl", "rsa-fernet"] as const) {
    it(`${suite}: every combination of threaded and not round-trips, on the threads`, async () => {
      const used = (
        ["box", "unbox", "fernetSeal", "fernetOpen", "aeadSeal", "aeadOpen"] as const
      ).map((name) => vi.spyOn(CipherPool.prototype, name));
      for (const [c, s] of [
        [client, threadedService],
        [threadedClient, service],
        [threadedClient, threadedService],
      ] as const) {
        const pad = suite === "x25519-aes-gcm" ? " ".repeat(1100) : "";
        const request = utf8(`{"tag":"request","suite":"${suite}"}${pad}`);
        const answer = `answer${pad}`;
        const sealed = await c.sealRequestAsync(request, peer, { suite });
        const opened = await s.openRequestAsync(sealed.body, sealed.headers, { maxAgeMs: 1000 });
        expect(text(opened.plain)).toBe(text(request));
        const reply = await s.sealResponseAsync(utf8(answer), opened.replyKey);
        expect(text(await c.openResponseAsync(reply.body, reply.headers, sealed.replyKey))).toBe(
          answer,
        );
        // And the synchronous methods read what the threads wrote, giving the same types.
        const syncOpened = s.openRequest(sealed.body, sealed.headers);
        expect(text(syncOpened.plain)).toBe(text(request));
        expect(Buffer.isBuffer(opened.plain)).toBe(Buffer.isBuffer(syncOpened.plain));
        const syncAnswer = c.openResponse(reply.body, reply.headers, sealed.replyKey);
        expect(text(syncAnswer)).toBe(answer);
        const asyncAnswer = await c.openResponseAsync(reply.body, reply.headers, sealed.replyKey);
        expect(Buffer.isBuffer(asyncAnswer)).toBe(Buffer.isBuffer(syncAnswer));
      }
      // Ops made by a threaded end went to its pool: 2 (service), 3 (client), 5 (both).
      // x25519-aes-gcm seals version 3 (ChaCha20-Poly1305), on the calling thread at any size.
      const calls = used.reduce((n, spy) => n + spy.mock.calls.length, 0);
      expect(calls).toBe(suite === "x25519-aes-gcm" ? 0 : 10);
    });

    if (suite === "x25519-aes-gcm") {
      it(`${suite}: a version-1 request is opened and answered (in version 1) on the threads`, async () => {
        const v = fixture<NativeVectors>("x25519-aes-gcm-vectors.json");
        const vectorService = encryptor({
          keys: { rsa: null, nacl: naclKeyPairFromSecretKey(v.serviceNaclSecretKey) },
          cipherThreads: 1,
        });
        const used = (["aeadSeal", "aeadOpen"] as const).map((name) =>
          vi.spyOn(CipherPool.prototype, name),
        );
        const request = Buffer.from(v.requestBody, "hex");
        const opened = await vectorService.openRequestAsync(request, v.requestHeaders);
        expect(text(opened.plain)).toBe(v.requestPlain);
        const reply = await vectorService.sealResponseAsync(utf8("on a thread"), opened.replyKey);
        expect(reply.body[0]).toBe(1);
        expect(used.map((spy) => spy.mock.calls.length)).toEqual([1, 1]);
        const body = Buffer.from(reply.body);
        const d = createDecipheriv(
          "aes-256-gcm",
          nativeVectorKey(v, "nuropb x25519-aes-gcm v1"),
          body.subarray(10, 22),
        );
        d.setAAD(Buffer.concat([body.subarray(0, 22), request.subarray(50, 62)]));
        d.setAuthTag(body.subarray(body.length - 16));
        const plain = Buffer.concat([d.update(body.subarray(22, body.length - 16)), d.final()]);
        expect(plain.toString()).toBe("on a thread");
        const damaged = Buffer.from(request);
        damaged[70] = (damaged[70] ?? 0) ^ 1;
        await expect(
          vectorService.openRequestAsync(damaged, v.requestHeaders),
        ).rejects.toMatchObject({ details: { reason: DecryptFailure.tampered } });
      });
    }

    it(`${suite}: a damaged request or response fails exactly as it does without threads`, async () => {
      const rand = prng(suite === "nacl" ? 11 : suite === "rsa-fernet" ? 12 : 13);
      const sealed = client.sealRequest(utf8('{"tag":"request"}'), peer, { suite });
      const opened = service.openRequest(sealed.body, sealed.headers);
      const reply = service.sealResponse(utf8('{"tag":"response"}'), opened.replyKey);
      const reasons = new Set<string>();
      for (let i = 0; i < 150; i++) {
        const req = mutate(sealed.body, rand);
        const want = await outcome(() => service.openRequest(req, sealed.headers).plain);
        const got = await outcome(
          async () => (await threadedService.openRequestAsync(req, sealed.headers)).plain,
        );
        expect(got, `request #${i}`).toBe(want);
        reasons.add(want.split(" ")[1] ?? "");
        const res = mutate(reply.body, rand);
        const replyKey: ReplyKey = sealed.replyKey;
        expect(
          await outcome(() => threadedClient.openResponseAsync(res, reply.headers, replyKey)),
          `response #${i}`,
        ).toBe(await outcome(() => client.openResponse(res, reply.headers, replyKey)));
      }
      expect(reasons.has(DecryptFailure.tampered) || reasons.has(DecryptFailure.malformed)).toBe(
        true,
      );
      expect(reasons.has("undefined")).toBe(false);
    });

    it(`${suite}: too old or dated in the future is refused as expired, with threads too`, async () => {
      const sealed = await threadedClient.sealRequestAsync(utf8("old"), peer, { suite });
      clock.ms = now + 10_000;
      try {
        for (const s of [service, threadedService]) {
          const err = await s
            .openRequestAsync(sealed.body, sealed.headers, { maxAgeMs: 1000 })
            .then(
              () => undefined,
              (e: unknown) => e,
            );
          expect(decryptFailureReason(err)).toBe(DecryptFailure.expired);
        }
        clock.ms = now - 120_000;
        const err = await threadedService
          .openRequestAsync(sealed.body, sealed.headers, { maxAgeMs: 1000 })
          .then(
            () => undefined,
            (e: unknown) => e,
          );
        expect(decryptFailureReason(err)).toBe(DecryptFailure.expired);
      } finally {
        clock.ms = now;
      }
    });
  }

  for (const suite of ["x25519-aes-gcm", "nacl", "rsa-fernet"] as const) {
    it(`${suite}: buffers the caller reuses once a call has returned do not change its result`, async () => {
      const plain = Buffer.from("secret-original");
      const sealing = threadedClient.sealRequestAsync(plain, peer, { suite });
      plain.write("XXXXXXXXXXXXXXX");
      const sealed = await sealing;
      expect(text(service.openRequest(sealed.body, sealed.headers).plain)).toBe("secret-original");
      const other = client.sealRequest(utf8("message-B"), peer, { suite });
      const a = client.sealRequest(utf8("message-A"), peer, { suite });
      const body = Buffer.alloc(Math.max(a.body.length, other.body.length));
      Buffer.from(a.body).copy(body);
      const view = body.subarray(0, a.body.length);
      const opening = threadedService.openRequestAsync(view, a.headers);
      Buffer.from(other.body).copy(body); // reused before the open completes
      const opened = await opening;
      expect(text(opened.plain)).toBe("message-A");
      // The reply is bound to A's request: A's client opens it.
      const reply = service.sealResponse(utf8("to A"), opened.replyKey);
      expect(text(client.openResponse(reply.body, reply.headers, a.replyKey))).toBe("to A");
    });
  }

  it("bad arguments are refused at once, as without threads", async () => {
    await expect(
      threadedClient.sealRequestAsync("text" as unknown as Uint8Array, peer),
    ).rejects.toThrow(TypeError);
    await expect(
      threadedService.openRequestAsync(new Uint8Array(8), {}, { maxAgeMs: -1 }),
    ).rejects.toThrow(/maxAgeMs must be a finite number/);
    await expect(
      threadedService.sealResponseAsync(utf8("x"), { suite: "nacl" } as ReplyKey),
    ).rejects.toThrow(/not issued by @nuropb\/crypto/);
  });
});

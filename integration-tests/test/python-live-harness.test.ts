import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestMesh, rabbitEnv } from "../src/amqp-helpers.ts";
import type { TestMesh } from "../src/amqp-helpers.ts";
import { fromPeerJson, pythonPeerScript, startPythonPeer, toPeerJson } from "../src/python-peer.ts";

// The harness that runs live Python peers: a peer that cannot start fails with what Python said
// (never a skip), a running one answers and records, and integers travel exactly.

let mesh: TestMesh;
let dir: string;

beforeAll(async () => {
  mesh = await createTestMesh("pylive-harness");
  dir = mkdtempSync(join(tmpdir(), "nuropb-pypeer-"));
});

afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await mesh?.teardown();
});

describe("python-peer harness", () => {
  it("a script that fails to import rejects with Python's traceback", async () => {
    const script = join(dir, "broken_import.py");
    writeFileSync(script, "import nuropb.rmq_api\nimport nuropb_module_that_does_not_exist\n");
    await expect(startPythonPeer({ script, config: {} })).rejects.toThrow(
      /exited \(code 1[\s\S]*ModuleNotFoundError: No module named 'nuropb_module_that_does_not_exist'/,
    );
  });

  it("a peer that cannot connect (no such vhost) rejects with its reason, without the URL", async () => {
    const url = `${rabbitEnv().amqpUrl}/no-such-vhost-${Date.now()}`;
    const err = await startPythonPeer({
      script: pythonPeerScript("nuropb_peer.py"),
      config: { amqp_url: url, services: [{ name: "nowhere", kind: "shared" }] },
    }).catch((e: unknown) => e as Error);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/exited \(code 2[\s\S]*nuropb_peer: could not start/);
    expect((err as Error).message).not.toContain("guest:guest");
  });

  it("a missing script is named in the error", async () => {
    await expect(startPythonPeer({ script: join(dir, "missing.py"), config: {} })).rejects.toThrow(
      /the peer script is missing at .*missing\.py/,
    );
  });

  it("a running peer answers ops, reports Python exceptions as replies and stops", async () => {
    const peer = await startPythonPeer({
      script: pythonPeerScript("nuropb_peer.py"),
      config: { amqp_url: mesh.url, client: true, services: [] },
    });
    try {
      expect(peer.ready.client_response_queue).toMatch(
        new RegExp(`^nuropb-${mesh.vhost}-client-[0-9a-f]{32}-rq$`),
      );
      await expect(peer.call("no_such_op")).resolves.toMatchObject({
        ok: false,
        error: { class: "ValueError", description: "unknown op 'no_such_op'" },
      });
      await expect(
        peer.call("request", { service: "nobody_here", method: "m", params: {} }),
      ).resolves.toMatchObject({
        ok: true,
        value: {
          error: {
            error: "NuropbNotDeliveredError",
            description: "Service nobody_here not available. unable to call method m",
          },
        },
      });
    } finally {
      await peer.stop();
    }
    await expect(peer.call("describe", { service: "x" })).rejects.toThrow(/exited \(code 0/);
  });

  it("integers beyond 2^53 travel exactly between the test and the peer", () => {
    const value = { max: 9223372036854775807n, list: [-(2n ** 70n), 1, "9"] };
    expect(toPeerJson(value)).toBe(
      '{"max":{"$int":"9223372036854775807"},"list":[{"$int":"-1180591620717411303424"},1,"9"]}',
    );
    expect(fromPeerJson(toPeerJson(value))).toEqual(value);
  });

  it("NaN and the infinities the peer tags arrive as those numbers; other one-key objects stay", () => {
    expect(
      fromPeerJson(
        '{"a":{"$float":"nan"},"b":[{"$float":"inf"},{"$float":"-inf"}],"c":{"$float":"x"}}',
      ),
    ).toEqual({
      a: Number.NaN,
      b: [Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY],
      c: { $float: "x" },
    });
  });
});

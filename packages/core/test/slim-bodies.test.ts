import { createPayloadEncryptor, createServiceKeys } from "@nuropb/crypto";
import { createClient, createService } from "@nuropb/core";
import type { Destination, Frame, Transport } from "@nuropb/protocol";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createMesh } from "./helpers.ts";

// On a transport whose every reader is nuropb-ts (`capabilities.slimBodies`, the memory transport
// here), plaintext requests and responses go with slim bodies; sealed ones keep the whole body,
// whose correlation id binds an answer to its call.

let mesh: ReturnType<typeof createMesh>;
beforeEach(() => {
  mesh = createMesh();
});
afterEach(async () => {
  await mesh.cleanup();
});

/** `t`, whose sends are also recorded in `sent`. */
function tapped(t: Transport, sent: { to: Destination; frame: Frame }[]): Transport {
  return new Proxy(t, {
    get(target, prop) {
      if (prop === "send") {
        return (to: Destination, frame: Frame) => {
          sent.push({ to, frame });
          return target.send(to, frame);
        };
      }
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

const json = (f: Frame): Record<string, unknown> =>
  JSON.parse(new TextDecoder().decode(f.body)) as Record<string, unknown>;

describe("slim bodies", () => {
  it("plaintext calls and answers leave out what the frame carries, and read back whole", async () => {
    const sent: { to: Destination; frame: Frame }[] = [];
    const service = createService({
      transport: tapped(mesh.transport(), sent),
      name: "s",
      instance: { echo: (p: unknown, ctx: { context: unknown }) => ({ p, c: ctx.context }) },
    });
    await service.connect();
    mesh.defer(() => service.disconnect());
    const transport = mesh.transport();
    expect(transport.capabilities.slimBodies).toBe(true);
    const client = createClient({ transport: tapped(transport, sent) });
    await client.connect();
    mesh.defer(() => client.disconnect());

    const whole = await client.request(
      "s",
      "echo",
      { a: 1 },
      { user: "u" },
      { rpcResponse: false },
    );
    expect(whole).toMatchObject({
      result: { p: { a: 1 }, c: { user: "u" } },
      error: null,
      trace_id: expect.any(String) as unknown,
      context: { user: "u" },
    });
    const request = sent.find(
      (s) => s.to.kind === "rpc" && s.frame.headers.nuropb_type === "request",
    );
    const reply = sent.find((s) => s.to.kind === "reply");
    expect(json(request!.frame)).toEqual({
      tag: "request",
      service: "s",
      method: "echo",
      params: { a: 1 },
      context: { user: "u" },
    });
    expect(json(reply!.frame)).toEqual({
      tag: "response",
      result: { p: { a: 1 }, c: { user: "u" } },
      error: null,
      context: { user: "u" },
    });
    expect(reply!.frame.correlationId).toBe(request!.frame.correlationId);
    expect(reply!.frame.headers.trace_id).toBe(request!.frame.headers.trace_id);
  });

  it("sealed calls and answers keep the whole body inside the ciphertext", async () => {
    const keys = createServiceKeys({ rsa: true });
    const sent: { to: Destination; frame: Frame }[] = [];
    const service = createService({
      transport: tapped(mesh.transport(), sent),
      name: "s",
      instance: { echo: (p: unknown) => p },
      keys,
    });
    await service.connect();
    mesh.defer(() => service.disconnect());
    const client = createClient({
      transport: tapped(mesh.transport(), sent),
      encryption: { suites: ["rsa-fernet"] },
    });
    await client.connect();
    mesh.defer(() => client.disconnect());
    expect(await client.request("s", "echo", { a: 1 }, {}, { encrypted: true })).toEqual({ a: 1 });

    const request = sent.find((s) => s.to.kind === "rpc" && s.frame.headers.encrypted === "yes");
    const reply = sent.find((s) => s.to.kind === "reply" && s.frame.headers.encrypted === "yes");
    const opener = createPayloadEncryptor({ keys, suites: ["rsa-fernet"] });
    const opened = opener.openRequest(request!.frame.body, request!.frame.headers);
    const body = JSON.parse(new TextDecoder().decode(opened.plain)) as Record<string, unknown>;
    expect(body.correlation_id).toBe(request!.frame.correlationId);
    expect(body).toHaveProperty("trace_id");
    expect(body).toHaveProperty("context");
    // The answer, sealed with the same reply key: the whole body, ids and reply_to included.
    const answer = JSON.parse(
      new TextDecoder().decode(
        opener.openResponse(reply!.frame.body, reply!.frame.headers, opened.replyKey),
      ),
    ) as Record<string, unknown>;
    expect(answer.correlation_id).toBe(request!.frame.correlationId);
    expect(answer.reply_to).toBe(request!.frame.replyTo);
    expect(answer).toHaveProperty("warning", null);
  });
});

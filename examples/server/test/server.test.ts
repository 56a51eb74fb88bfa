import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, expect, it } from "vitest";
import { main } from "../src/main.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

it("creates its key file, then shows an authorised, two refused and an encrypted call", async () => {
  const dir = mkdtempSync(join(tmpdir(), "nuropb-example-server-"));
  dirs.push(dir);
  const keyFile = join(dir, "sandbox.keys.json");
  const lines = await main({ print: () => {}, amqpUrl: "", keyFile });
  expect(lines).toEqual([
    `sandbox ready on the memory transport (keys: ${keyFile})`,
    'get_account -> {"user":"user-1234"}',
    "get_account without a token -> NuropbAuthenticationError: sandbox.get_account needs a token in context['Authorization']",
    "save_secret in plaintext -> NuropbAuthorizationError: sandbox.save_secret requires an encrypted call",
    'save_secret encrypted -> {"saved":true,"length":2,"encrypted":true}',
  ]);
  expect(statSync(keyFile).mode & 0o777).toBe(0o600);

  // A second run loads the same file instead of creating another.
  const before = statSync(keyFile).mtimeMs;
  const again = await main({ print: () => {}, amqpUrl: "", keyFile });
  expect(again.at(-1)).toBe('save_secret encrypted -> {"saved":true,"length":2,"encrypted":true}');
  expect(statSync(keyFile).mtimeMs).toBe(before);
});

import { existsSync } from "node:fs";
import { expect, it } from "vitest";
import { launchNats } from "../src/brokers/nats.ts";
import { launchBroker } from "../src/brokers/process.ts";

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

it("a missing broker binary fails with how to install it", async () => {
  await expect(
    launchBroker({
      name: "NATS",
      command: "nats-server-that-is-not-installed",
      args: [],
      readyLine: /ready/,
      installHint: "apt-get install -y nats-server",
    }),
  ).rejects.toThrowError(/not installed.*apt-get install -y nats-server/);
});

it("launchNats starts a server that restarts on its port and store, and stop() leaves nothing behind", async () => {
  const server = await launchNats();
  const first = server.process.pid;
  expect(alive(first)).toBe(true);
  await server.process.restart();
  expect(alive(first)).toBe(false);
  expect(server.process.pid).not.toBe(first);
  await server.stop();
  expect(server.process.running).toBe(false);
  expect(alive(server.process.pid)).toBe(false);
  expect(existsSync(server.storeDir)).toBe(false);
});

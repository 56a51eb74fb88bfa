import { execFile, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  chmodSync,
  chownSync,
  createWriteStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { createServer, Socket } from "node:net";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import type { StartedBroker } from "./types.ts";

/** Erlang distribution listening on the loopback interface only. */
const LOOPBACK_DIST = "-kernel inet_dist_use_interface {127,0,0,1}";

declare module "vitest" {
  interface ProvidedContext {
    /** `amqp://guest:guest@127.0.0.1:PORT` of the private node (no vhost path: append `/vhost`). */
    amqpUrl: string;
    /** `amqps://guest:guest@localhost:PORT`; the server certificate is signed by `amqpCaFile`. */
    amqpsUrl: string;
    /** PEM file of the throwaway CA that signed the node's server and client certificates. */
    amqpCaFile: string;
    /** PEM client certificate / key signed by the same CA (optional for the server). */
    amqpClientCertFile: string;
    amqpClientKeyFile: string;
    /** Management API base, `http://guest:guest@127.0.0.1:{amqp port + 10000}/api` (PROTOCOL.md §2.1). */
    amqpMgmtUrl: string;
    /** Erlang node name of the private RabbitMQ node. */
    rabbitNode: string;
    /** Path of `rabbitmqctl`. */
    rabbitCtl: string;
    /** JSON object: the environment `rabbitmqctl` needs to reach the node (`stop_app`, `start_app`). */
    rabbitCtlEnv: string;
  }
}

const PREFIX = "nuropb-rabbitmq-";
const RABBIT_BIN_CANDIDATES = ["/usr/lib/rabbitmq/bin", "/usr/local/lib/rabbitmq/bin"];
export const INSTALL_HINT =
  "RabbitMQ 3.x is required: `apt-get install -y rabbitmq-server openssl` (Debian/Ubuntu), " +
  "or put `rabbitmq-server` and `rabbitmqctl` on PATH.";
const STARTUP_TIMEOUT_MS = 120_000;

/** A private RabbitMQ node that a test controls (see {@link launchRabbitMq}). */
export interface RabbitMqNode {
  /** `amqp://guest:guest@127.0.0.1:PORT` (no vhost path: append `/vhost`). */
  readonly amqpUrl: string;
  /** Management API base with credentials, `http://guest:guest@127.0.0.1:{amqp port + 10000}/api`. */
  readonly mgmtUrl: string;
  /** What the shared node hands the tests through `provide` (see `ProvidedContext`). */
  readonly provide: Readonly<Record<string, string>>;
  /**
   * Stops the node gracefully (`rabbitmqctl stop`: the Erlang VM exits) and starts it again with
   * the same node name, ports, configuration and data directory, then waits until it serves
   * AMQP and the management API again. What the node keeps across a real restart (durable
   * queues, persistent messages) is there afterwards; everything else is gone.
   * @throws Error with the node's log tail when it does not come back.
   */
  restart(): Promise<void>;
  /** Stops the node and removes its directory. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Starts one private RabbitMQ node for this test run: its own node name, ports, data, log and
 * config directories, the management plugin, a TLS listener with a throwaway CA, and a private
 * epmd. Stops it (and everything it spawned) in `stop()`.
 * @throws Error with the node's log tail and install hints when the node cannot start.
 */
export async function startRabbitMq(): Promise<StartedBroker> {
  const node = await launchRabbitMq();
  return { provide: node.provide, stop: () => node.stop() };
}

/**
 * Starts a private RabbitMQ node as {@link startRabbitMq} does, and returns a handle that can also
 * restart it with its data kept (a test file that restarts a broker can own one of its own).
 * @throws Error with the node's log tail and install hints when the node cannot start.
 */
export async function launchRabbitMq(): Promise<RabbitMqNode> {
  reapStaleNodes();
  const bin = findRabbitBin();
  const dir = mkdtempSync(join(tmpdir(), PREFIX));
  writeFileSync(join(dir, "owner.pid"), String(process.pid));
  const ids = runAsIds();

  const ports = await pickPorts();
  const nodeName = `nuropb-test-${randomBytes(6).toString("hex")}@localhost`;
  const home = join(dir, "home");
  const paths = {
    home,
    mnesia: join(dir, "mnesia"),
    log: join(dir, "log"),
    tls: join(dir, "tls"),
    config: join(dir, "rabbitmq.conf"),
    plugins: join(dir, "enabled_plugins"),
    pid: join(dir, "rabbitmq.pid"),
    envFile: join(dir, "rabbitmq-env.conf"),
    stdout: join(dir, "stdout.log"),
  };
  for (const d of [paths.home, paths.mnesia, paths.log, paths.tls])
    mkdirSync(d, { recursive: true });
  writeFileSync(join(home, ".erlang.cookie"), randomBytes(20).toString("hex").toUpperCase());
  chmodSync(join(home, ".erlang.cookie"), 0o400);
  writeFileSync(paths.plugins, "[rabbitmq_management].\n");
  writeFileSync(paths.envFile, "");
  writeFileSync(join(dir, "epmd.port"), String(ports.epmd));

  try {
    makeCertificates(paths.tls);
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(
      `RabbitMQ harness: cannot create TLS certificates with openssl: ${String(err)}`,
    );
  }
  writeFileSync(
    paths.config,
    [
      `listeners.tcp.default = 127.0.0.1:${ports.amqp}`,
      `listeners.ssl.default = 127.0.0.1:${ports.amqps}`,
      `ssl_options.cacertfile = ${join(paths.tls, "ca.pem")}`,
      `ssl_options.certfile = ${join(paths.tls, "server.pem")}`,
      `ssl_options.keyfile = ${join(paths.tls, "server.key")}`,
      "ssl_options.verify = verify_peer",
      "ssl_options.fail_if_no_peer_cert = false",
      `management.tcp.port = ${ports.mgmt}`,
      "management.tcp.ip = 127.0.0.1",
      "loopback_users = none",
      // Consumer details show up in the management API within a second, not five.
      "collect_statistics_interval = 1000",
      // A shared CI machine: do not block publishers on a nearly full disk.
      "disk_free_limit.absolute = 1MB",
      "",
    ].join("\n"),
  );
  if (ids !== undefined) chownTree(dir, ids.uid, ids.gid);

  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin",
    LANG: "C.UTF-8",
    LC_ALL: "C.UTF-8",
    HOME: home,
    RABBITMQ_NODENAME: nodeName,
    RABBITMQ_NODE_IP_ADDRESS: "127.0.0.1",
    RABBITMQ_NODE_PORT: String(ports.amqp),
    RABBITMQ_DIST_PORT: String(ports.dist),
    RABBITMQ_CTL_DIST_PORT_MIN: String(ports.ctlMin),
    RABBITMQ_CTL_DIST_PORT_MAX: String(ports.ctlMin + 10),
    ERL_EPMD_PORT: String(ports.epmd),
    RABBITMQ_MNESIA_BASE: paths.mnesia,
    RABBITMQ_LOG_BASE: paths.log,
    RABBITMQ_PID_FILE: paths.pid,
    RABBITMQ_ENABLED_PLUGINS_FILE: paths.plugins,
    RABBITMQ_CONFIG_FILE: paths.config,
    RABBITMQ_ADVANCED_CONFIG_FILE: join(dir, "advanced.config"),
    RABBITMQ_CONF_ENV_FILE: paths.envFile,
    // Loopback only: epmd, the node's distribution and rabbitmqctl's own distribution node.
    ERL_EPMD_ADDRESS: "127.0.0.1",
    // Two shared cores: do not let idle schedulers spin.
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: `+sbwt none +sbwtdcpu none +sbwtdio none ${LOOPBACK_DIST}`,
    RABBITMQ_CTL_ERL_ARGS: LOOPBACK_DIST,
  };
  // Our own epmd on a private port, started with relaxed checks so that `epmd -kill` always
  // works (a plain epmd refuses while a node is still registered, and would outlive us).
  const epmd = spawnSync(
    "epmd",
    ["-daemon", "-address", "127.0.0.1", "-port", String(ports.epmd), "-relaxed_command_check"],
    {
      env,
      stdio: "ignore",
      timeout: 10_000,
    },
  );
  if (epmd.error !== undefined || epmd.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(
      `RabbitMQ harness: cannot start epmd (${String(epmd.error ?? epmd.status)}). ${INSTALL_HINT}`,
    );
  }
  const ctl = join(bin, "rabbitmqctl");
  const server = join(bin, "rabbitmq-server");
  const command = ids !== undefined ? "setpriv" : server;
  const args =
    ids !== undefined ? [`--reuid=${ids.uid}`, `--regid=${ids.gid}`, "--init-groups", server] : [];
  const out = createWriteStream(paths.stdout);
  let child!: ChildProcess;
  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  let spawnError: Error | undefined;
  let exitPromise!: Promise<void>;
  /** Starts `rabbitmq-server` (again) with the node's environment: same name, ports and data. */
  const spawnNode = (): void => {
    const proc = spawn(command, args, {
      env,
      cwd: dir,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
    });
    child = proc;
    exited = undefined;
    spawnError = undefined;
    proc.stdout?.pipe(out, { end: false });
    proc.stderr?.pipe(out, { end: false });
    proc.on("error", (err) => (spawnError = err));
    exitPromise = new Promise<void>((resolve) =>
      proc.on("exit", (code, signal) => {
        exited = { code, signal };
        resolve();
      }),
    );
  };
  spawnNode();

  const emergency = (): void => hardKill(child, dir, ports.epmd);
  process.on("exit", emergency);

  const logTail = (): string => {
    const parts: string[] = [];
    for (const f of [paths.stdout, join(paths.log, `${nodeName}.log`)]) {
      try {
        const text = readFileSync(f, "utf8");
        parts.push(`--- ${f}\n${text.split("\n").slice(-40).join("\n")}`);
      } catch {
        // not written yet
      }
    }
    return parts.join("\n");
  };

  /** `rabbitmqctl stop`, then waits (bounded) for the server process to exit. */
  const stopNode = async (): Promise<void> => {
    if (exited === undefined && spawnError === undefined) {
      await runCtl(ctl, env, ["-n", nodeName, "stop"], 60_000).catch(() => undefined);
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([exitPromise, new Promise((r) => (timer = setTimeout(r, 15_000)))]);
      clearTimeout(timer);
    }
  };

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await stopNode();
    hardKill(child, dir, ports.epmd);
    process.off("exit", emergency);
    child.stdout?.unpipe(out);
    child.stderr?.unpipe(out);
    await new Promise<void>((r) => out.end(r));
  };

  const mgmtBase = `http://127.0.0.1:${ports.mgmt}/api`;
  /** Waits until the node serves AMQP, says it has booted, and the management API answers. */
  const awaitReady = async (): Promise<void> => {
    const deadline = Date.now() + STARTUP_TIMEOUT_MS;
    // 1. wait for the AMQP listener (cheap), bailing out when the process dies.
    for (;;) {
      if (spawnError !== undefined) throw spawnError;
      if (exited !== undefined) {
        throw new Error(
          `rabbitmq-server exited early (code ${exited.code}, signal ${exited.signal})`,
        );
      }
      if (Date.now() > deadline) throw new Error("timed out waiting for the AMQP listener");
      if (await portOpen(ports.amqp)) break;
      await delay(250);
    }
    // 2. the node says it has fully booted.
    await runCtl(ctl, env, ["-n", nodeName, "await_startup", "--timeout", "60"], 90_000);
    // 3. the management API answers.
    const auth = `Basic ${Buffer.from("guest:guest").toString("base64")}`;
    for (;;) {
      if (Date.now() > deadline) throw new Error("timed out waiting for the management API");
      const ok = await fetch(`${mgmtBase}/overview`, { headers: { authorization: auth } })
        .then((r) => r.ok)
        .catch(() => false);
      if (ok) break;
      await delay(250);
    }
  };

  try {
    await awaitReady();
  } catch (err) {
    const tail = logTail();
    await stop();
    throw new Error(
      `RabbitMQ node ${nodeName} did not start: ${err instanceof Error ? err.message : String(err)}\n` +
        `${INSTALL_HINT}\n${tail}`,
    );
  }

  const provide: Record<string, string> = {
    amqpUrl: `amqp://guest:guest@127.0.0.1:${ports.amqp}`,
    amqpsUrl: `amqps://guest:guest@localhost:${ports.amqps}`,
    amqpCaFile: join(paths.tls, "ca.pem"),
    amqpClientCertFile: join(paths.tls, "client.pem"),
    amqpClientKeyFile: join(paths.tls, "client.key"),
    amqpMgmtUrl: `http://guest:guest@127.0.0.1:${ports.mgmt}/api`,
    rabbitNode: nodeName,
    rabbitCtl: ctl,
    rabbitCtlEnv: JSON.stringify(env),
  };
  let restarting: Promise<void> | undefined;
  const restart = async (): Promise<void> => {
    if (stopped) throw new Error(`RabbitMQ node ${nodeName} was stopped; it cannot restart`);
    await stopNode();
    // A node that did not stop within the bound: kill what is left, its data stays on disk.
    if (exited === undefined) {
      killNodeProcesses(dir, child.pid);
      let timer: NodeJS.Timeout | undefined;
      const gone = await Promise.race([
        exitPromise.then(() => true),
        new Promise<false>((r) => (timer = setTimeout(() => r(false), 15_000))),
      ]);
      clearTimeout(timer);
      if (!gone) {
        throw new Error(
          `RabbitMQ node ${nodeName} did not exit within 15 s of SIGKILL\n${logTail()}`,
        );
      }
    }
    child.stdout?.unpipe(out);
    child.stderr?.unpipe(out);
    spawnNode();
    try {
      await awaitReady();
    } catch (err) {
      throw new Error(
        `RabbitMQ node ${nodeName} did not come back after a restart: ${err instanceof Error ? err.message : String(err)}\n${logTail()}`,
      );
    }
  };
  return {
    amqpUrl: provide.amqpUrl as string,
    mgmtUrl: provide.amqpMgmtUrl as string,
    provide,
    restart: () => (restarting ??= restart().finally(() => (restarting = undefined))),
    stop,
  };
}

interface Ports {
  amqp: number;
  amqps: number;
  mgmt: number;
  dist: number;
  epmd: number;
  ctlMin: number;
}

/** Free ports; the management port is the AMQP port + 10000 so PROTOCOL.md §2.1 derivation works. */
async function pickPorts(): Promise<Ports> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const amqp = 20_000 + Math.floor(Math.random() * 9_000);
    const mgmt = amqp + 10_000;
    const amqps = 40_000 + Math.floor(Math.random() * 5_000);
    const dist = 45_000 + Math.floor(Math.random() * 5_000);
    const epmd = 50_000 + Math.floor(Math.random() * 5_000);
    const ctlMin = 55_000 + Math.floor(Math.random() * 5_000);
    const wanted = [amqp, mgmt, amqps, dist, epmd];
    for (let p = ctlMin; p <= ctlMin + 10; p++) wanted.push(p);
    if (new Set(wanted).size !== wanted.length) continue;
    let allFree = true;
    for (const p of wanted) {
      if (!(await portFree(p))) {
        allFree = false;
        break;
      }
    }
    if (allFree) return { amqp, amqps, mgmt, dist, epmd, ctlMin };
  }
  throw new Error("RabbitMQ harness: could not find free ports");
}

export function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once("error", () => resolve(false));
    srv.listen({ port, host: "0.0.0.0", exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

export function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = new Socket();
    const done = (ok: boolean): void => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1000, () => done(false));
    s.once("error", () => done(false));
    s.connect(port, "127.0.0.1", () => done(true));
  });
}

export function runCtl(
  ctl: string,
  env: Record<string, string>,
  args: readonly string[],
  timeoutMs: number,
): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(ctl, args, { env, timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) reject(new Error(`rabbitmqctl ${args.join(" ")} failed: ${stderr || err.message}`));
      else resolve(stdout);
    });
  });
}

export function findRabbitBin(): string {
  for (const d of RABBIT_BIN_CANDIDATES) {
    if (existsSync(join(d, "rabbitmq-server")) && existsSync(join(d, "rabbitmqctl"))) return d;
  }
  // Fall back to whatever is on PATH (a non-Debian install runs the scripts directly).
  const which = spawnSync("sh", ["-c", "command -v rabbitmq-server"], { encoding: "utf8" });
  const found = which.stdout.trim();
  if (which.status === 0 && found !== "") {
    const d = found.slice(0, found.lastIndexOf("/"));
    if (existsSync(join(d, "rabbitmqctl"))) return d;
  }
  throw new Error(`RabbitMQ harness: rabbitmq-server not found. ${INSTALL_HINT}`);
}

/** When running as root, the node runs as the `rabbitmq` user (as Debian's launcher would). */
export function runAsIds(): { uid: number; gid: number } | undefined {
  if (userInfo().uid !== 0) return undefined;
  const id = spawnSync("id", ["-u", "rabbitmq"], { encoding: "utf8" });
  const gid = spawnSync("id", ["-g", "rabbitmq"], { encoding: "utf8" });
  if (id.status !== 0 || gid.status !== 0) return undefined;
  return { uid: Number(id.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

export function chownTree(path: string, uid: number, gid: number): void {
  chownSync(path, uid, gid);
  if (statSync(path).isDirectory()) {
    chmodSync(path, 0o755);
    for (const entry of readdirSync(path)) chownTree(join(path, entry), uid, gid);
  }
}

/** A throwaway CA plus server (localhost, 127.0.0.1) and client certificates, EC P-256. */
function makeCertificates(dir: string): void {
  const run = (args: string[]): void => {
    const r = spawnSync("openssl", args, { cwd: dir, encoding: "utf8" });
    if (r.error) throw r.error;
    if (r.status !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr}`);
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  run(
    ["req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "3"].concat([
      "-subj",
      "/CN=nuropb-test-ca",
    ]),
  );
  writeFileSync(
    join(dir, "server.ext"),
    "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n" +
      "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
  );
  writeFileSync(
    join(dir, "client.ext"),
    "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
  );
  for (const who of ["server", "client"]) {
    run([
      "req",
      ...ec,
      "-keyout",
      `${who}.key`,
      "-out",
      `${who}.csr`,
      "-subj",
      `/CN=${who === "server" ? "localhost" : "nuropb-test-client"}`,
    ]);
    run([
      "x509",
      "-req",
      "-in",
      `${who}.csr`,
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      `${who}.pem`,
      "-days",
      "3",
      "-extfile",
      `${who}.ext`,
    ]);
  }
}

/** Kills the node's process group, its epmd, and removes its directory. Synchronous (exit-safe). */
function hardKill(child: ChildProcess, dir: string, epmdPort: number): void {
  killNodeProcesses(dir, child.pid);
  spawnSync("epmd", ["-port", String(epmdPort), "-kill"], { stdio: "ignore", timeout: 5_000 });
  rmSync(dir, { recursive: true, force: true });
}

function killNodeProcesses(dir: string, groupLeader: number | undefined): void {
  if (groupLeader !== undefined) {
    try {
      process.kill(-groupLeader, "SIGKILL");
    } catch {
      // already gone
    }
  }
  try {
    const pid = Number(readFileSync(join(dir, "rabbitmq.pid"), "utf8").trim());
    if (pid > 0 && isOurBeam(pid, dir)) process.kill(pid, "SIGKILL");
  } catch {
    // no pid file or already gone
  }
}

function isOurBeam(pid: number, dir: string): boolean {
  try {
    const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    return cmd.includes("beam") && cmd.includes(dir);
  } catch {
    return false;
  }
}

/** Removes nodes left behind by test runs whose process died without cleaning up. */
function reapStaleNodes(): void {
  let entries: string[];
  try {
    entries = readdirSync(tmpdir()).filter((e) => e.startsWith(PREFIX));
  } catch {
    return;
  }
  for (const e of entries) {
    const dir = join(tmpdir(), e);
    let owner: number;
    try {
      owner = Number(readFileSync(join(dir, "owner.pid"), "utf8").trim());
    } catch {
      continue;
    }
    if (owner > 0 && alive(owner)) continue;
    killNodeProcesses(dir, undefined);
    try {
      const port = readFileSync(join(dir, "epmd.port"), "utf8").trim();
      spawnSync("epmd", ["-port", port, "-kill"], { stdio: "ignore", timeout: 5_000 });
    } catch {
      // no epmd recorded
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

export function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

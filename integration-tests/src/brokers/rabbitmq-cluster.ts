import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  chmodSync,
  createWriteStream,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
  type WriteStream,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  INSTALL_HINT,
  alive,
  chownTree,
  delay,
  findRabbitBin,
  portFree,
  portOpen,
  runAsIds,
  runCtl,
} from "./rabbitmq.ts";

// A RabbitMQ cluster on one machine: every node has its own node name, ports and directories, all
// share one Erlang cookie and one private epmd, and the second and later nodes join the first
// with `rabbitmqctl stop_app; join_cluster; start_app` (as an operator would). Not started by the
// global setup: a test file (or the bench) that needs it launches it, so that only runs using it
// pay for three Erlang VMs (about 30 to 60 s on two busy cores).

const PREFIX = "nuropb-rmqcluster-";
/** Erlang distribution listening on the loopback interface only. */
const LOOPBACK_DIST = "-kernel inet_dist_use_interface {127,0,0,1}";
const STARTUP_TIMEOUT_MS = 180_000;

/** One node of a {@link RabbitCluster}. */
export interface RabbitClusterNode {
  /** Erlang node name, `nuropb-cN-…@localhost`. */
  readonly name: string;
  readonly amqpPort: number;
  /** Its Erlang distribution port (listening on 127.0.0.1 only). */
  readonly distPort: number;
  /** `amqp://guest:guest@127.0.0.1:PORT` (no vhost path: append `/vhost`). */
  readonly amqpUrl: string;
  /** True while the node's process runs. */
  readonly running: boolean;
  /** SIGKILL of the node's process group (its Erlang VM and helpers); waits until it is gone. */
  kill(): Promise<void>;
  /** Starts the node again with its name, ports and data: it rejoins the cluster by itself. */
  start(): Promise<void>;
}

/** A private RabbitMQ cluster (see {@link launchRabbitCluster}). */
export interface RabbitCluster {
  readonly nodes: readonly RabbitClusterNode[];
  /** The private epmd's port (listening on 127.0.0.1 only). */
  readonly epmdPort: number;
  /** `amqp://guest:guest@127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3` (append `/vhost`). */
  readonly amqpUrl: string;
  /** Runs `rabbitmqctl -n NODE args…` against node `index` and returns its stdout. */
  ctl(index: number, args: readonly string[], timeoutMs?: number): Promise<string>;
  /** Kills every node and removes the cluster's directory. Idempotent. */
  stop(): Promise<void>;
}

interface NodePorts {
  readonly amqp: number;
  readonly mgmt: number;
  readonly dist: number;
  readonly ctlMin: number;
}

/**
 * Starts `size` (default 3) private RabbitMQ nodes with the management plugin, joins them into
 * one cluster and waits until every node reports all of them running.
 * @throws Error with the failing node's log tail when a node cannot start or join: never a skip.
 */
export async function launchRabbitCluster(size = 3): Promise<RabbitCluster> {
  if (!Number.isInteger(size) || size < 1 || size > 7) {
    throw new TypeError(`launchRabbitCluster: size must be an integer from 1 to 7, got ${size}`);
  }
  reapStaleClusters();
  const bin = findRabbitBin();
  const ctlPath = join(bin, "rabbitmqctl");
  const server = join(bin, "rabbitmq-server");
  const ids = runAsIds();
  const dir = mkdtempSync(join(tmpdir(), PREFIX));
  writeFileSync(join(dir, "owner.pid"), String(process.pid));
  const cookie = randomBytes(20).toString("hex").toUpperCase();
  const hex = randomBytes(4).toString("hex");
  const epmdPort = await pickPort([]);
  writeFileSync(join(dir, "epmd.port"), String(epmdPort));
  const taken = [epmdPort];
  const ports: NodePorts[] = [];
  for (let i = 0; i < size; i++) {
    const p = await pickNodePorts(taken);
    taken.push(p.amqp, p.mgmt, p.dist, ...range(p.ctlMin, 11));
    ports.push(p);
  }

  const nodes: NodeRuntime[] = ports.map((p, i) => {
    const ndir = join(dir, `node${i}`);
    const home = join(ndir, "home");
    for (const d of [home, join(ndir, "mnesia"), join(ndir, "log")])
      mkdirSync(d, { recursive: true });
    writeFileSync(join(home, ".erlang.cookie"), cookie);
    chmodSync(join(home, ".erlang.cookie"), 0o400);
    writeFileSync(join(ndir, "enabled_plugins"), "[rabbitmq_management].\n");
    writeFileSync(join(ndir, "rabbitmq-env.conf"), "");
    writeFileSync(
      join(ndir, "rabbitmq.conf"),
      [
        `listeners.tcp.default = 127.0.0.1:${p.amqp}`,
        `management.tcp.port = ${p.mgmt}`,
        "management.tcp.ip = 127.0.0.1",
        "loopback_users = none",
        "collect_statistics_interval = 1000",
        "disk_free_limit.absolute = 1MB",
        "",
      ].join("\n"),
    );
    const name = `nuropb-c${i}-${hex}@localhost`;
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin",
      LANG: "C.UTF-8",
      LC_ALL: "C.UTF-8",
      HOME: home,
      RABBITMQ_NODENAME: name,
      RABBITMQ_NODE_IP_ADDRESS: "127.0.0.1",
      RABBITMQ_NODE_PORT: String(p.amqp),
      RABBITMQ_DIST_PORT: String(p.dist),
      RABBITMQ_CTL_DIST_PORT_MIN: String(p.ctlMin),
      RABBITMQ_CTL_DIST_PORT_MAX: String(p.ctlMin + 10),
      ERL_EPMD_PORT: String(epmdPort),
      RABBITMQ_MNESIA_BASE: join(ndir, "mnesia"),
      RABBITMQ_LOG_BASE: join(ndir, "log"),
      RABBITMQ_PID_FILE: join(ndir, "rabbitmq.pid"),
      RABBITMQ_ENABLED_PLUGINS_FILE: join(ndir, "enabled_plugins"),
      RABBITMQ_CONFIG_FILE: join(ndir, "rabbitmq.conf"),
      RABBITMQ_ADVANCED_CONFIG_FILE: join(ndir, "advanced.config"),
      RABBITMQ_CONF_ENV_FILE: join(ndir, "rabbitmq-env.conf"),
      // Loopback only: epmd, the nodes' distribution and rabbitmqctl's own distribution node.
      ERL_EPMD_ADDRESS: "127.0.0.1",
      RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: `+sbwt none +sbwtdcpu none +sbwtdio none ${LOOPBACK_DIST}`,
      RABBITMQ_CTL_ERL_ARGS: LOOPBACK_DIST,
    };
    return {
      index: i,
      name,
      dir: ndir,
      ports: p,
      env,
      child: undefined,
      exited: Promise.resolve(),
      out: undefined,
    };
  });
  if (ids !== undefined) chownTree(dir, ids.uid, ids.gid);

  const epmd = spawnSync(
    "epmd",
    ["-daemon", "-address", "127.0.0.1", "-port", String(epmdPort), "-relaxed_command_check"],
    {
      env: nodes[0]?.env,
      stdio: "ignore",
      timeout: 10_000,
    },
  );
  if (epmd.error !== undefined || epmd.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`RabbitMQ cluster harness: cannot start epmd. ${INSTALL_HINT}`);
  }

  const spawnNode = (n: NodeRuntime): void => {
    const command = ids !== undefined ? "setpriv" : server;
    const args =
      ids !== undefined
        ? [`--reuid=${ids.uid}`, `--regid=${ids.gid}`, "--init-groups", server]
        : [];
    n.out ??= createWriteStream(join(n.dir, "stdout.log"), { flags: "a" });
    const proc = spawn(command, args, {
      env: n.env,
      cwd: n.dir,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
    });
    n.child = proc;
    proc.stdout?.pipe(n.out, { end: false });
    proc.stderr?.pipe(n.out, { end: false });
    proc.on("error", () => undefined);
    n.exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  };

  const ctl = (i: number, args: readonly string[], timeoutMs = 60_000): Promise<string> => {
    const n = nodes[i];
    if (n === undefined) throw new RangeError(`no node ${i} in a cluster of ${size}`);
    return runCtl(ctlPath, n.env, ["-n", n.name, ...args], timeoutMs);
  };

  const awaitReady = async (n: NodeRuntime): Promise<void> => {
    const deadline = Date.now() + STARTUP_TIMEOUT_MS;
    for (;;) {
      const c = n.child;
      if (c === undefined || c.exitCode !== null || c.signalCode !== null) {
        throw new Error(`rabbitmq-server of ${n.name} exited early`);
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${n.name}'s AMQP port`);
      if (await portOpen(n.ports.amqp)) break;
      await delay(250);
    }
    // The node registers with epmd a moment after its port opens: retry until it answers.
    for (;;) {
      try {
        await ctl(n.index, ["await_startup", "--timeout", "120"], 150_000);
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await delay(500);
      }
    }
    const auth = `Basic ${Buffer.from("guest:guest").toString("base64")}`;
    for (;;) {
      if (Date.now() > deadline)
        throw new Error(`timed out waiting for ${n.name}'s management API`);
      const ok = await fetch(`http://127.0.0.1:${n.ports.mgmt}/api/overview`, {
        headers: { authorization: auth },
      })
        .then((r) => r.ok)
        .catch(() => false);
      if (ok) break;
      await delay(250);
    }
  };

  const killNode = async (n: NodeRuntime): Promise<void> => {
    killGroup(n);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([n.exited, new Promise((r) => (timer = setTimeout(r, 15_000)))]);
    clearTimeout(timer);
    // The launcher exits before its VM is gone: wait (bounded) until the AMQP port is closed.
    const until = Date.now() + 15_000;
    while (Date.now() < until && (await portOpen(n.ports.amqp))) await delay(100);
  };

  let stopped = false;
  const emergency = (): void => {
    for (const n of nodes) killGroup(n);
    spawnSync("epmd", ["-port", String(epmdPort), "-kill"], { stdio: "ignore", timeout: 5_000 });
    rmSync(dir, { recursive: true, force: true });
  };
  process.on("exit", emergency);
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    // The data goes with the directory: no graceful stop needed.
    await Promise.all(nodes.map((n) => killNode(n)));
    for (const n of nodes) {
      n.child?.stdout?.unpipe();
      n.child?.stderr?.unpipe();
      await new Promise<void>((r) => (n.out === undefined ? r() : n.out.end(r)));
    }
    emergency();
    process.off("exit", emergency);
  };

  const logTail = (n: NodeRuntime): string => {
    const parts: string[] = [];
    for (const f of [join(n.dir, "stdout.log"), join(n.dir, "log", `${n.name}.log`)]) {
      try {
        parts.push(`--- ${f}\n${readFileSync(f, "utf8").split("\n").slice(-30).join("\n")}`);
      } catch {
        // not written yet
      }
    }
    return parts.join("\n");
  };

  let step = "starting";
  let failing: NodeRuntime | undefined;
  try {
    for (const n of nodes) spawnNode(n);
    await Promise.all(
      nodes.map((n) =>
        awaitReady(n).catch((err: unknown) => {
          failing ??= n;
          throw err;
        }),
      ),
    );
    const first = nodes[0] as NodeRuntime;
    for (const n of nodes.slice(1)) {
      failing = n;
      step = `joining ${n.name} to ${first.name}`;
      await ctl(n.index, ["stop_app"]);
      await ctl(n.index, ["join_cluster", first.name]);
      await ctl(n.index, ["start_app"]);
      await ctl(n.index, ["await_startup", "--timeout", "120"], 150_000);
    }
    failing = first;
    step = "checking the cluster status";
    await waitClusterRunning(() => ctl(0, ["cluster_status", "--formatter", "json"]), size);
  } catch (err) {
    const tail = failing !== undefined ? logTail(failing) : "";
    await stop();
    throw new Error(
      `RabbitMQ cluster did not start (${step}): ${err instanceof Error ? err.message : String(err)}\n${INSTALL_HINT}\n${tail}`,
    );
  }

  const handles: RabbitClusterNode[] = nodes.map((n) => ({
    name: n.name,
    amqpPort: n.ports.amqp,
    distPort: n.ports.dist,
    amqpUrl: `amqp://guest:guest@127.0.0.1:${n.ports.amqp}`,
    get running() {
      const c = n.child;
      return c !== undefined && c.exitCode === null && c.signalCode === null;
    },
    kill: () => killNode(n),
    async start() {
      if (stopped) throw new Error("the cluster was stopped");
      const c = n.child;
      if (c !== undefined && c.exitCode === null && c.signalCode === null) {
        throw new Error(`${n.name} is already running`);
      }
      spawnNode(n);
      try {
        await awaitReady(n);
        await waitClusterRunning(
          () => ctl(n.index, ["cluster_status", "--formatter", "json"]),
          size,
        );
      } catch (err) {
        throw new Error(
          `${n.name} did not come back: ${err instanceof Error ? err.message : String(err)}\n${logTail(n)}`,
        );
      }
    },
  }));
  return {
    nodes: handles,
    epmdPort,
    amqpUrl: `amqp://guest:guest@${nodes.map((n) => `127.0.0.1:${n.ports.amqp}`).join(",")}`,
    ctl,
    stop,
  };
}

interface NodeRuntime {
  readonly index: number;
  readonly name: string;
  readonly dir: string;
  readonly ports: NodePorts;
  readonly env: Record<string, string>;
  child: ChildProcess | undefined;
  exited: Promise<void>;
  out: WriteStream | undefined;
}

/** Waits (bounded) until `cluster_status` lists `size` running nodes. */
async function waitClusterRunning(status: () => Promise<string>, size: number): Promise<void> {
  const deadline = Date.now() + 60_000;
  let last = "";
  for (;;) {
    try {
      last = await status();
      const parsed = JSON.parse(last) as { running_nodes?: unknown[] };
      if ((parsed.running_nodes?.length ?? 0) >= size) return;
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    if (Date.now() > deadline) {
      throw new Error(`the cluster does not report ${size} running nodes: ${last}`);
    }
    await delay(500);
  }
}

/** SIGKILL of the node's process group, and of its VM by pid file (a VM outside the group). */
function killGroup(n: NodeRuntime): void {
  const pid = n.child?.pid;
  if (pid !== undefined && n.child?.exitCode === null && n.child.signalCode === null) {
    try {
      process.kill(-pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  killBeamByPidFile(n.dir);
}

function killBeamByPidFile(nodeDir: string): void {
  try {
    const pid = Number(readFileSync(join(nodeDir, "rabbitmq.pid"), "utf8").trim());
    const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    if (pid > 0 && cmd.includes("beam") && cmd.includes(nodeDir)) process.kill(pid, "SIGKILL");
  } catch {
    // no pid file, or already gone
  }
}

function range(start: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => start + i);
}

async function pickPort(taken: readonly number[]): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const p = 50_000 + Math.floor(Math.random() * 5_000);
    if (!taken.includes(p) && (await portFree(p))) return p;
  }
  throw new Error("RabbitMQ cluster harness: could not find a free port");
}

/** Free ports for one node; its management port is its AMQP port + 10000 (PROTOCOL.md §2.1). */
async function pickNodePorts(taken: readonly number[]): Promise<NodePorts> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const amqp = 20_000 + Math.floor(Math.random() * 9_000);
    const dist = 45_000 + Math.floor(Math.random() * 5_000);
    const ctlMin = 55_000 + Math.floor(Math.random() * 5_000);
    const wanted = [amqp, amqp + 10_000, dist, ...range(ctlMin, 11)];
    if (wanted.some((p) => taken.includes(p))) continue;
    let free = true;
    for (const p of wanted) {
      if (!(await portFree(p))) {
        free = false;
        break;
      }
    }
    if (free) return { amqp, mgmt: amqp + 10_000, dist, ctlMin };
  }
  throw new Error("RabbitMQ cluster harness: could not find free ports");
}

/** Removes clusters left behind by runs whose process died without cleaning up. */
function reapStaleClusters(): void {
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
    try {
      for (const n of readdirSync(dir)) if (n.startsWith("node")) killBeamByPidFile(join(dir, n));
      const port = readFileSync(join(dir, "epmd.port"), "utf8").trim();
      spawnSync("epmd", ["-port", port, "-kill"], { stdio: "ignore", timeout: 5_000 });
    } catch {
      // nothing recorded
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

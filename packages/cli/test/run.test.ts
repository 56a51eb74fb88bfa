import { describe, expect, it } from "vitest";
import { CLI_VERSION, run } from "../src/index.ts";
import { capture } from "./helpers.ts";

const URL = "amqp://guest:hunter22@rabbit.invalid:5672/mesh";

/** Runs the CLI in-process; nothing here reaches a network. */
async function cli(argv: string[], env: Record<string, string> = {}) {
  const c = capture({ env });
  const code = await run(argv, c.io);
  return { code, stdout: c.stdout(), stderr: c.stderr() };
}

describe("help and version", () => {
  it("prints help on stdout with exit code 0", async () => {
    const r = await cli(["--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("Usage: nuropb [options] [command]");
    for (const command of [
      "mesh",
      "services",
      "describe",
      "call",
      "command",
      "publish",
      "listen",
    ]) {
      expect(r.stdout).toMatch(new RegExp(`^  ${command} `, "m"));
    }
    expect(r.stdout).toContain("Exit codes: 0 ok, 2 usage error");
    const sub = await cli(["call", "--help"]);
    expect(sub.code).toBe(0);
    expect(sub.stdout).toContain("Usage: nuropb call [options] <service> <method> [params-json]");
    expect(sub.stdout).toContain("--encrypted");
  });

  it("prints the version", async () => {
    const r = await cli(["--version"]);
    expect(r).toEqual({ code: 0, stdout: `${CLI_VERSION}\n`, stderr: "" });
  });

  it("prints help on stderr and exits 2 without a command", async () => {
    const r = await cli([]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain("Usage: nuropb");
  });
});

describe("usage errors exit 2 with one line saying what to fix", () => {
  it.each([
    [["bogus"], "error: unknown command 'bogus'"],
    [["call"], "error: missing required argument 'service'"],
    [["call", "svc"], "error: missing required argument 'method'"],
    [["call", "svc", "m", "{}", "extra"], "error: too many arguments for 'call'"],
    [["call", "svc", "m", "--nope"], "error: unknown option '--nope'"],
    [["publish", "topic"], "error: missing required argument 'event-json'"],
    [["listen"], "error: missing required argument 'pattern'"],
    [["call", "svc", "m", "{not json"], "error: params is not valid JSON"],
    [["call", "svc", "m", "[]"], "error: params must be a JSON object"],
    [["call", "svc", "m", "--context", "nope"], "error: --context is not valid JSON"],
    [["command", "svc", "m", "--ttl", "soon"], "error: --ttl must be a positive whole number"],
    [["describe", "svc", "--ttl", "0"], "error: --ttl must be a positive whole number"],
    [["publish", "a.*", "{}"], "error: 'a.*' is not a topic"],
    [["publish", "a.b", "{oops"], "error: event is not valid JSON"],
    [["listen", "a.b#"], "error: topic pattern 'a.b#'"],
    [["listen", "a.b", "--count", "x"], "error: --count must be a positive whole number"],
    [["call", "no spaces", "m"], "error: service name must be letters"],
    [["command", "svc", ""], "error: method name must not be empty"],
    [["call", "svc", "m"], "error: no broker URL: pass --url"],
    [["services"], "error: no broker URL"],
    [["mesh", "setup"], "error: no broker URL"],
    [["call", "svc", "m", "--url", "http://guest:hunter22@h/v"], "error: --url must be an amqp://"],
    [["call", "svc", "m", "--url", "amqp://guest:hunter22@h:5672"], "error: --url has no vhost"],
    [
      ["services", "--url", URL, "--management-url", "ftp://h/api"],
      "error: --management-url must be",
    ],
    [
      ["call", "svc", "m", "--url", URL, "--connect-timeout", "-1"],
      "error: --connect-timeout must",
    ],
    [["mesh", "teardown", "--url", URL], "error: mesh teardown deletes vhost 'mesh'"],
    [["call", "svc", "m", "--url", URL, "--ttl", "3000000000"], "error: --ttl must be at most"],
    [
      ["listen", "a.#", "--url", URL, "--connect-timeout", "3000000000"],
      "error: --connect-timeout must be at most 2147483647",
    ],
    [
      ["services", "--url", URL, "--connect-timeout", "3000000000"],
      "error: --connect-timeout must be at most",
    ],
    [
      ["call", "svc", "m", "--url", `${URL}?heartbeat=abc`],
      "error: --url parameter heartbeat must be a whole number of seconds",
    ],
    [["listen", "a.#", "--url", `${URL}?heartbeat=70000`], "error: --url parameter heartbeat"],
  ])("%j", async (argv, message) => {
    const r = await cli(argv);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr.startsWith(message)).toBe(true);
    expect(r.stderr).not.toMatch(/^\s+at /m); // no stack trace
    expect(r.stderr).not.toContain("hunter22");
  });

  it("takes the URL from NUROPB_AMQP_URL and names it in the message", async () => {
    const r = await cli(["call", "svc", "m"], { NUROPB_AMQP_URL: "amqp://guest:hunter22@h" });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(
      "error: NUROPB_AMQP_URL has no vhost (the mesh is the URL's path): amqp://guest:****@h; expected amqp://user:password@host:5672/vhost\n",
    );
  });

  it("accepts the global options after the command too", async () => {
    const r = await cli(["call", "svc", "m", "--url", "http://h/v"]);
    expect(r.stderr).toContain("--url must be an amqp://");
  });
});

describe("colours", () => {
  it("are off when not a terminal, on for a terminal, off again with NO_COLOR", async () => {
    const argv = ["call", "svc", "m", "[]"];
    const pipe = capture();
    await run(argv, pipe.io);
    expect(pipe.stderr()).not.toContain("\x1b[");

    const tty = capture({ stderrIsTTY: true });
    await run(argv, tty.io);
    expect(tty.stderr()).toContain("\x1b[31merror:\x1b[39m");

    const noColor = capture({ stderrIsTTY: true, env: { NO_COLOR: "1" } });
    await run(argv, noColor.io);
    expect(noColor.stderr()).not.toContain("\x1b[");
  });
});

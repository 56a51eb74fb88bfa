import { obfuscateUrl } from "@nuropb/transport-amqp";
import { CliError, ExitCode } from "./errors.ts";
import type { ServiceQueueInfo } from "./format.ts";
import { scrub } from "./scrub.ts";

const SERVICE_QUEUE = /^nuropb-(.+)-sq$/;

/**
 * The service queues (`nuropb-{service}-sq`) of a vhost, from the RabbitMQ management API
 * (`GET {api}/queues/{vhost}`), sorted by service name.
 * @param api management API base, e.g. `http://guest:guest@localhost:15672/api`
 * @throws CliError (transport) when the API is unreachable, refuses the credentials, the vhost
 *   does not exist, or its answer is not JSON or does not arrive within `timeoutMs`.
 */
export async function listServiceQueues(
  api: string,
  vhost: string,
  timeoutMs: number,
): Promise<ServiceQueueInfo[]> {
  const u = new URL(api);
  const username = decodeURIComponent(u.username) || "guest";
  const password = decodeURIComponent(u.password) || "guest";
  u.username = "";
  u.password = "";
  const base = u.toString().replace(/\/+$/, "");
  const shown = obfuscateUrl(api);
  const columns = "name,consumers,messages_ready,messages_unacknowledged";
  let res: Response;
  try {
    res = await fetch(`${base}/queues/${encodeURIComponent(vhost)}?columns=${columns}`, {
      headers: {
        authorization: `Basic ${Buffer.from(`${username}:${password}`).toString("base64")}`,
        accept: "application/json",
      },
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    const cause = (err as Error & { cause?: Error })?.cause?.message ?? (err as Error)?.message;
    throw new CliError(
      `cannot reach the management API at ${shown}: ${scrub(String(cause), { password, username })}`,
      ExitCode.transport,
      {
        cause: err,
        hint: "is the rabbitmq_management plugin on? pass --management-url when it is not at the AMQP port + 10000",
      },
    );
  }
  if (res.status === 404) {
    throw new CliError(`there is no mesh (vhost) '${vhost}' at ${shown}`, ExitCode.transport, {
      hint: "`nuropb mesh setup` creates it",
    });
  }
  if (res.status === 401 || res.status === 403) {
    throw new CliError(
      `the management API at ${shown} refused the credentials (${res.status})`,
      ExitCode.transport,
      { hint: "the user needs the 'management' or 'monitoring' tag" },
    );
  }
  if (!res.ok) {
    const body = await res.text().catch(() => "");
    throw new CliError(
      `the management API at ${shown} answered ${res.status} ${res.statusText}: ${scrub(body.slice(0, 200), { password, username })}`,
      ExitCode.transport,
    );
  }
  let list: unknown;
  try {
    list = JSON.parse(await res.text()) as unknown;
  } catch (err) {
    // A proxy's HTML page, a truncated body, or a body slower than the timeout.
    const reason =
      (err as Error)?.name === "TimeoutError"
        ? `the answer did not arrive within ${timeoutMs} ms`
        : `the answer is not JSON (${scrub((err as Error)?.message ?? String(err), { password, username })})`;
    throw new CliError(
      `cannot read the management API's answer from ${shown}: ${reason}`,
      ExitCode.transport,
      {
        cause: err,
        hint: "is --management-url the RabbitMQ management API (its /api path)?",
      },
    );
  }
  if (!Array.isArray(list)) {
    throw new CliError(
      `the management API at ${shown} answered something else than a list`,
      ExitCode.transport,
    );
  }
  const out: ServiceQueueInfo[] = [];
  for (const q of list as Record<string, unknown>[]) {
    const name = typeof q.name === "string" ? q.name : "";
    const m = SERVICE_QUEUE.exec(name);
    if (m?.[1] === undefined) continue;
    out.push({
      service: m[1],
      queue: name,
      consumers: count(q.consumers),
      ready: count(q.messages_ready),
      unacked: count(q.messages_unacknowledged),
    });
  }
  return out.sort((a, b) => a.service.localeCompare(b.service));
}

function count(v: unknown): number {
  return typeof v === "number" && Number.isFinite(v) ? v : 0;
}

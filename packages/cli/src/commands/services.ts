import { managementUrlFromAmqpUrl } from "@nuropb/transport-amqp";
import { brokerUrl, managementUrl } from "../args.ts";
import { ExitCode } from "../errors.ts";
import { formatServices } from "../format.ts";
import { listServiceQueues } from "../management.ts";
import { connectTimeoutOf, type CommandContext } from "./context.ts";

/** Options of `nuropb services`. */
export interface ServicesOptions {
  /** `--json`: print the list as JSON. */
  readonly json?: boolean;
}

/**
 * `nuropb services`: the services on the mesh, from the broker's service queues (`nuropb-*-sq`),
 * with their live instances (consumers) and waiting messages.
 */
export async function servicesCommand(
  cx: CommandContext,
  opts: ServicesOptions,
): Promise<ExitCode> {
  const timeoutMs = connectTimeoutOf(cx);
  const broker = cx.useBroker(
    brokerUrl(cx.globals.url, cx.io.env, { amqpFor: "`nuropb services`" }),
  );
  const api =
    managementUrl(cx.globals.managementUrl, cx.io.env) ?? managementUrlFromAmqpUrl(broker.url);
  const { output } = cx;
  const list = await output.spin(`listing services on ${broker.vhost}`, () =>
    listServiceQueues(api, broker.vhost, timeoutMs),
  );
  if (opts.json === true) {
    output.data(`${JSON.stringify(list, null, 2)}\n`);
    return ExitCode.ok;
  }
  if (list.length === 0) {
    output.note(`no services on mesh ${broker.vhost}`);
    return ExitCode.ok;
  }
  output.data(formatServices(list, output.out));
  return ExitCode.ok;
}

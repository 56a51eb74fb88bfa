import { brokerUrl, jsonObject, jsonValue, topic } from "../args.ts";
import { ExitCode } from "../errors.ts";
import { openSession } from "../session.ts";
import { connectTimeoutOf, type CommandContext } from "./context.ts";

/** Options of `nuropb publish`. */
export interface PublishOptions {
  /** `--context`: a JSON object, as typed. */
  readonly context?: string;
  /** `--trace-id`. @defaultValue a fresh id */
  readonly traceId?: string;
}

/** `nuropb publish <topic> <event-json>`: publishes an event to every service bound to the topic. */
export async function publishCommand(
  cx: CommandContext,
  topicName: string,
  eventJson: string,
  opts: PublishOptions,
): Promise<ExitCode> {
  topic(topicName);
  const event = jsonValue(eventJson, "event");
  const context = jsonObject(opts.context, "--context");
  const connectTimeoutMs = connectTimeoutOf(cx);
  const broker = cx.useBroker(brokerUrl(cx.globals.url, cx.io.env));
  const { output } = cx;
  const session = await output.spin(`connecting to ${broker.shown}`, () =>
    openSession(broker, { connectTimeoutMs }, cx.createTransport),
  );
  try {
    await output.spin(`publishing to ${topicName}`, () =>
      session.client.publishEvent(
        topicName,
        event,
        context,
        opts.traceId !== undefined ? { traceId: opts.traceId } : {},
      ),
    );
    output.note(output.err.green(`event published to ${topicName}`));
    return ExitCode.ok;
  } finally {
    await session.close();
  }
}

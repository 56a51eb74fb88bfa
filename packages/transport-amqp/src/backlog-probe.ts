import amqplib, { type ChannelModel } from "amqplib";
import { DEFAULT_DL_QUEUE, NuropbTransportError, serviceQueueName } from "@nuropb/protocol";
import { obfuscateUrl } from "./options.ts";

/** A backlog probe on RabbitMQ (for `withLeaderWatch` of `@nuropb/runner`), with its connection. */
export interface AmqpBacklogProbe {
  /**
   * `messageCount` of a passive declare of `nuropb-{service}-sq` (ready messages; unacknowledged
   * ones are not counted by the broker) and of the dead-letter queue (shared by the vhost's
   * services; undefined when it does not exist). Each declare runs on a channel of its own, as a
   * missing queue closes the channel.
   */
  (service: string): Promise<{ depth: number; deadLetters: number | undefined }>;
  /** Closes the probe's connection. Idempotent. */
  close(): Promise<void>;
}

/** Options of {@link createAmqpBacklogProbe}. */
export interface AmqpBacklogProbeOptions {
  /** `amqp[s]://user:password@host:port/vhost`. */
  readonly url: string;
  /** The dead-letter queue, as `configureMesh` declared it. @defaultValue "nuropb-dl-queue" */
  readonly dlQueue?: string;
}

const OWNER = "createAmqpBacklogProbe";

/**
 * Creates a backlog probe on a connection of its own, opened at the first probe.
 * @throws TypeError naming the bad option.
 */
export function createAmqpBacklogProbe(options: AmqpBacklogProbeOptions): AmqpBacklogProbe {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`${OWNER}: options are required ({ url })`);
  }
  const { url } = options;
  if (typeof url !== "string" || !/^amqps?:\/\//.test(url)) {
    throw new TypeError(`${OWNER}: 'url' must be an amqp:// or amqps:// URL`);
  }
  const dlQueue = options.dlQueue ?? DEFAULT_DL_QUEUE;
  if (typeof dlQueue !== "string" || dlQueue === "") {
    throw new TypeError(`${OWNER}: 'dlQueue' must be a non-empty string`);
  }
  let model: Promise<ChannelModel> | undefined;
  const connection = (): Promise<ChannelModel> => {
    if (model === undefined) {
      const opening = amqplib.connect(url).then((m) => {
        // A lost connection is opened again at the next probe.
        const forget = (): void => {
          if (model === opening) model = undefined;
        };
        m.on("error", forget);
        m.on("close", forget);
        return m;
      });
      model = opening;
      opening.catch(() => {
        if (model === opening) model = undefined;
      });
    }
    return model;
  };
  /** The queue's message count; undefined when it does not exist (404). */
  const count = async (queue: string): Promise<number | undefined> => {
    const m = await connection();
    const channel = await m.createChannel();
    channel.on("error", () => undefined);
    try {
      return (await channel.checkQueue(queue)).messageCount;
    } catch (err) {
      if ((err as { code?: number }).code === 404) return undefined;
      throw err;
    } finally {
      await channel.close().catch(() => undefined);
    }
  };
  const probe = async (
    service: string,
  ): Promise<{ depth: number; deadLetters: number | undefined }> => {
    try {
      const [depth, deadLetters] = await Promise.all([
        count(serviceQueueName(service)),
        count(dlQueue),
      ]);
      return { depth: depth ?? 0, deadLetters };
    } catch (err) {
      throw new NuropbTransportError(
        `${OWNER}: probe on ${obfuscateUrl(url)} failed: ${err instanceof Error ? err.message : String(err)}`,
      );
    }
  };
  return Object.assign(probe, {
    close: async (): Promise<void> => {
      const m = model;
      model = undefined;
      if (m !== undefined) await (await m.catch(() => undefined))?.close().catch(() => undefined);
    },
  });
}

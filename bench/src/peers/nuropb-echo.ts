import { createClient, createService } from "@nuropb/core";
import type { MeshParticipant, RequestContext } from "@nuropb/core";
import type { CipherSuite, ServiceKeys } from "@nuropb/crypto";
import type { Transport } from "@nuropb/protocol";

/** The benchmark service: answers with its params (decoded from the request, re-encoded). */
class Echo {
  /** Requests that arrived encrypted (so a suite can check that encryption really happened). */
  _encrypted = 0;

  echo(params: Record<string, unknown>, ctx: RequestContext): Record<string, unknown> {
    if (ctx.encrypted) this._encrypted++;
    return params;
  }
}

/** A client of an {@link startNuropbEcho} service, with its own transport. */
export interface NuropbEchoClient {
  readonly client: MeshParticipant;
  call(params: unknown): Promise<unknown>;
}

/** A nuropb echo service plus as many clients as asked for, each on its own transport. */
export interface NuropbEcho {
  readonly serviceName: string;
  /** How many requests arrived encrypted so far. */
  readonly encryptedCount: number;
  /** Adds a client (own transport, like a separate process), connected. */
  addClient(options?: {
    readonly encryption?: {
      readonly suites: readonly CipherSuite[];
      /** Cipher work on this many worker threads (0: on the event loop). */
      readonly cipherThreads?: number;
    };
    /** Sent with every request (`encrypted: true` seals it). */
    readonly encrypted?: boolean;
  }): Promise<NuropbEchoClient>;
  /** Disconnects the clients and the service and closes every transport. */
  close(): Promise<void>;
}

/**
 * Starts the echo service `serviceName` on a transport from `makeTransport` (called once for the
 * service and once per client, so each has its own connection).
 */
export async function startNuropbEcho(
  makeTransport: () => Transport,
  serviceName: string,
  options: { readonly keys?: ServiceKeys; readonly cipherThreads?: number } = {},
): Promise<NuropbEcho> {
  const transports: Transport[] = [];
  const instance = new Echo();
  const participants: MeshParticipant[] = [];
  const close = async (): Promise<void> => {
    for (const p of participants.reverse()) await p.disconnect().catch(() => undefined);
    for (const t of transports.reverse()) await t.close().catch(() => undefined);
  };
  try {
    const serviceTransport = makeTransport();
    transports.push(serviceTransport);
    const service = createService({
      transport: serviceTransport,
      name: serviceName,
      instance,
      ...(options.keys !== undefined ? { keys: options.keys } : {}),
      ...(options.cipherThreads !== undefined
        ? { encryption: { cipherThreads: options.cipherThreads } }
        : {}),
    });
    participants.push(service);
    await service.connect();
  } catch (err) {
    await close();
    throw err;
  }
  return {
    serviceName,
    get encryptedCount() {
      return instance._encrypted;
    },
    async addClient(clientOptions = {}) {
      const transport = makeTransport();
      transports.push(transport);
      const client = createClient({
        transport,
        ...(clientOptions.encryption !== undefined
          ? {
              encryption: {
                suites: [...clientOptions.encryption.suites],
                cipherThreads: clientOptions.encryption.cipherThreads ?? 0,
              },
            }
          : {}),
      });
      participants.push(client);
      await client.connect();
      const encrypted = clientOptions.encrypted;
      return {
        client,
        call:
          encrypted === undefined
            ? (params) => client.request(serviceName, "echo", params as Record<string, unknown>)
            : (params) =>
                client.request(serviceName, "echo", params as Record<string, unknown>, undefined, {
                  encrypted,
                }),
      };
    },
    close,
  };
}

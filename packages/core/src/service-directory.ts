import {
  DESCRIBE_METHOD,
  DESCRIBE_TTL_MS,
  NuropbHandlingError,
  NuropbMessageError,
} from "@nuropb/protocol";
import type { PeerKeys } from "@nuropb/crypto";
import { normaliseDescription, type ServiceDescription } from "./describe.ts";
import { checkName, checkTtl } from "./options.ts";
import { hasAnnouncedKey, peerKeysOf } from "./sealing.ts";

/** Asks `service` for its description (a `nuropb_describe` request, never encrypted). */
export type DescribeRequest = (service: string, ttlMs: number) => Promise<unknown>;

/**
 * The descriptions of the services a participant calls, asked for once and cached: they say
 * which methods require encryption and hold the keys to seal calls with.
 */
export class ServiceDirectory {
  readonly #cache = new Map<string, ServiceDescription>();
  readonly #ask: DescribeRequest;

  constructor(ask: DescribeRequest) {
    this.#ask = ask;
  }

  /** See {@link MeshParticipant.describeService}. */
  async describeService(
    name: string,
    options: { readonly refresh?: boolean; readonly ttlMs?: number } = {},
  ): Promise<ServiceDescription> {
    checkName(name, "service name");
    const ttlMs =
      options.ttlMs === undefined ? DESCRIBE_TTL_MS : checkTtl(options.ttlMs, "options.ttlMs");
    const cached = this.#cache.get(name);
    if (cached !== undefined && options.refresh !== true) return cached;
    const raw = await this.#ask(name, ttlMs);
    let d: ServiceDescription;
    try {
      d = normaliseDescription(raw);
    } catch (err) {
      throw new NuropbMessageError(
        `service ${name} answered ${DESCRIBE_METHOD} with something that is not a description`,
        { cause: err },
      );
    }
    this.#cache.set(name, d);
    return d;
  }

  /** See {@link MeshParticipant.requiresEncryption}. */
  async requiresEncryption(service: string, method: string): Promise<boolean> {
    const d = await this.describeService(service);
    const m = Object.hasOwn(d.methods, method) ? d.methods[method] : undefined;
    if (m === undefined)
      throw new NuropbHandlingError(`Unknown method ${method} on service ${service}`);
    return m.requires_encryption;
  }

  /** See {@link MeshParticipant.hasPublicKey}. */
  async hasPublicKey(service: string): Promise<boolean> {
    const d = await this.describeService(service);
    return hasAnnouncedKey(d);
  }

  /** Whether the cached description of `service` says `method` requires encryption (no I/O). */
  cachedRequiresEncryption(service: string, method: string): boolean {
    const d = this.#cache.get(service);
    return d?.methods[method]?.requires_encryption === true;
  }

  /**
   * The keys to seal a call to `service` with, when its description is cached (no I/O);
   * undefined when it is not.
   * @throws NuropbMessageError when the cached description announces no key.
   */
  cachedPeerKeys(service: string): PeerKeys | undefined {
    const d = this.#cache.get(service);
    return d === undefined ? undefined : peerKeysOf(d, service);
  }

  /** The keys to seal a call to `service` with (its description is fetched if needed). */
  async peerKeys(service: string): Promise<PeerKeys> {
    return peerKeysOf(await this.describeService(service), service);
  }
}

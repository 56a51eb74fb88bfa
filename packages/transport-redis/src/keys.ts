/**
 * Redis keys of a mesh. Every key starts with `{mesh}:`:
 *
 * - `{mesh}:sq:{service}`   stream: the service queue (requests, commands, events), group `nuropb`
 * - `{mesh}:rpc:{name}`     set: services bound to an rpc name (the service's own name and aliases)
 * - `{mesh}:evb:{service}`  set: the service's event binding patterns
 * - `{mesh}:evs`            set: services that have event bindings
 * - `{mesh}:dl`             stream: dead letters of every service of the mesh
 * - `{mesh}:rq:{address}`   list: responses for one participant
 * - `{mesh}:rql:{address}`  string: lease of the live consumer of that address (exclusivity)
 * - `{mesh}:evlog`          stream: the mesh's event log (every event sent, once set up)
 * - `{mesh}:evlog:cfg`      hash: the log's retention (`age` ms, `bytes`) and bytes `used`
 */
export interface MeshKeys {
  readonly prefix: string;
  serviceStream(service: string): string;
  rpcSet(name: string): string;
  eventBindings(service: string): string;
  readonly eventServices: string;
  readonly deadLetters: string;
  responseList(address: string): string;
  responseLease(address: string): string;
  readonly eventLog: string;
  readonly eventLogConfig: string;
}

/** The consumer group every service stream is read with. */
export const SERVICE_GROUP = "nuropb";

/** Key names of `mesh`. */
export function meshKeys(mesh: string): MeshKeys {
  const prefix = `${mesh}:`;
  return {
    prefix,
    serviceStream: (service) => `${prefix}sq:${service}`,
    rpcSet: (name) => `${prefix}rpc:${name}`,
    eventBindings: (service) => `${prefix}evb:${service}`,
    eventServices: `${prefix}evs`,
    deadLetters: `${prefix}dl`,
    responseList: (address) => `${prefix}rq:${address}`,
    responseLease: (address) => `${prefix}rql:${address}`,
    eventLog: `${prefix}evlog`,
    eventLogConfig: `${prefix}evlog:cfg`,
  };
}

/** True for a service, rpc or address name usable in a key: non-empty, no whitespace or control characters. */
export function isKeyName(value: string): boolean {
  // eslint-disable-next-line no-control-regex
  return typeof value === "string" && value !== "" && !/[\s\u0000-\u001f\u007f]/.test(value);
}

/** The millisecond part of a stream entry id (`1700000000000-3`). */
export function entryTimeMs(id: string): number {
  const dash = id.indexOf("-");
  return Number(dash < 0 ? id : id.slice(0, dash));
}

import { DEFAULT_MESH, newId, type Transport } from "@nuropb/protocol";
import { createAmqpTransport } from "@nuropb/transport-amqp";
import { createNatsTransport } from "@nuropb/transport-nats";
import { createRedisTransport } from "@nuropb/transport-redis";

/** Makes the transport the CLI talks through; tests pass one that returns a memory transport. */
export type TransportFactory = (
  url: string,
  settings: { readonly connectTimeoutMs: number },
) => Transport;

/**
 * The URLs of a comma list of hosts, `scheme://user:pass@h1:p1,h2:p2/path?query` (the nodes of a
 * cluster): one URL per host, each with the scheme, credentials, path and query. A URL without
 * a comma in its host part is returned as is.
 */
export function splitHostList(url: string): string[] {
  const m = /^([a-z][a-z0-9+.-]*:\/\/)([^@/?#]*@)?([^/?#]*)(.*)$/is.exec(url);
  if (m === null || !(m[3] ?? "").includes(",")) return [url];
  return (m[3] as string).split(",").map((h) => `${m[1]}${m[2] ?? ""}${h.trim()}${m[4] ?? ""}`);
}

/** A connection name the broker's monitoring shows: `nuropb-cli-…`. */
const connectionName = (): string => `nuropb-cli-${newId().slice(0, 8)}`;

/** RabbitMQ (a comma list of a cluster's nodes too), one connection named `nuropb-cli-…`. */
export const amqpTransportFactory: TransportFactory = (url, settings) =>
  createAmqpTransport({
    url,
    connectTimeoutMs: settings.connectTimeoutMs,
    connectionName: connectionName(),
  });

/**
 * NATS (JetStream): the server is the URL without its credentials and path (the servers of a
 * cluster with commas, `nats://h1:4222,h2:4222/mesh`); `user:password@` becomes the connection's
 * user and password, a lone `token@` its token; the path is the mesh. Credentials never enter
 * the server list, so no error text carries them.
 */
export const natsTransportFactory: TransportFactory = (url, settings) => {
  const all = splitHostList(url).map((x) => new URL(x));
  const u = all[0] as URL;
  const user = decodeURIComponent(u.username);
  const pass = decodeURIComponent(u.password);
  const mesh = u.pathname.replace(/^\//, "");
  return createNatsTransport({
    servers: all.map((x) => `${x.protocol}//${x.host}`),
    mesh: mesh === "" ? DEFAULT_MESH : mesh,
    name: connectionName(),
    connectTimeoutMs: settings.connectTimeoutMs,
    ...(pass !== ""
      ? { connectionOptions: { user, pass } }
      : user !== ""
        ? { connectionOptions: { token: user } }
        : {}),
  });
};

/** Redis: the URL as ioredis reads it (the path is the database), its `mesh` parameter the mesh. */
export const redisTransportFactory: TransportFactory = (url, settings) => {
  const u = new URL(url);
  const mesh = u.searchParams.get("mesh");
  u.searchParams.delete("mesh");
  return createRedisTransport({
    url: u.toString(),
    mesh: mesh === null || mesh === "" ? DEFAULT_MESH : mesh,
    connectTimeoutMs: settings.connectTimeoutMs,
  });
};

const BY_SCHEME: Readonly<Record<string, TransportFactory>> = {
  "amqp:": amqpTransportFactory,
  "amqps:": amqpTransportFactory,
  "nats:": natsTransportFactory,
  "tls:": natsTransportFactory,
  "redis:": redisTransportFactory,
  "rediss:": redisTransportFactory,
};

/**
 * The default {@link TransportFactory}: the transport of the URL's scheme — `amqp://`/`amqps://`
 * RabbitMQ, `nats://`/`tls://` NATS, `redis://`/`rediss://` Redis.
 * @throws TypeError for another scheme (the CLI checks URLs before, so this is a caller's bug).
 */
export const urlTransportFactory: TransportFactory = (url, settings) => {
  const factory = BY_SCHEME[new URL(splitHostList(url)[0] ?? url).protocol];
  if (factory === undefined) {
    throw new TypeError(
      "the broker URL must be amqp://, amqps://, nats://, tls://, redis:// or rediss://",
    );
  }
  return factory(url, settings);
};

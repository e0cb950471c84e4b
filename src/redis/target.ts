// Where Redis is, as configuration says it (config.ts parses the variables; client.ts connects).

/** host and port of a server (a Kafka broker, a Redis Sentinel). */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/**
 * Where Redis is: one node (REDIS_URL), or the primary that Redis Sentinel names
 * (REDIS_SENTINELS + REDIS_SENTINEL_MASTER), followed across failovers.
 */
export type RedisTarget =
  | { readonly kind: 'node'; readonly url: string }
  | {
      readonly kind: 'sentinel';
      readonly sentinels: readonly HostPort[];
      readonly master: string;
      /** REDIS_USERNAME / REDIS_PASSWORD: the data nodes' ACL user. */
      readonly username: string | undefined;
      readonly password: string | undefined;
      /** REDIS_SENTINEL_PASSWORD: the sentinels' own password. */
      readonly sentinelPassword: string | undefined;
    };

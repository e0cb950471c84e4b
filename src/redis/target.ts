// Where Redis is, as configuration says it (config.ts parses the variables; client.ts connects).

/** host and port of a server (a Kafka broker, a Redis Sentinel). */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/**
 * Where Redis is: one node (REDIS_URL); the primary that Redis Sentinel names (REDIS_SENTINELS +
 * REDIS_SENTINEL_MASTER), followed across failovers; or a Redis Cluster (REDIS_CLUSTER_NODES: a
 * few of its nodes, the client learns the rest), each campaign on the master of its hash slot.
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
    }  | {
      readonly kind: 'cluster';
      readonly nodes: readonly HostPort[];
      /** REDIS_USERNAME / REDIS_PASSWORD: the nodes' ACL user. */
      readonly username: string | undefined;
      readonly password: string | undefined;
    };

/** The variable that named this target, for messages. */
export function targetVariable(target: RedisTarget): 'REDIS_URL' | 'REDIS_SENTINELS' | 'REDIS_CLUSTER_NODES' {
  return target.kind === 'node' ? 'REDIS_URL' : target.kind === 'sentinel' ? 'REDIS_SENTINELS' : 'REDIS_CLUSTER_NODES';
}

// The Kafka client library, loaded by the first process that needs Kafka (openKafka, and the
// topic helpers), not at start-up: importing @platformatic/kafka costs about 45 MiB of RSS, which
// a process without KAFKA_BROKERS — the common case, and every process of a Redis-only drop — has
// no use for (docs/performance.md, "The issue route in front of Fastify"). Types are imported
// statically everywhere (`import type`, erased); values come from here.
type KafkaLibrary = typeof import('@platformatic/kafka');

let library: KafkaLibrary | undefined;

/** Loads the client library once; every later call answers at once. */
export async function loadKafkaLibrary(): Promise<KafkaLibrary> {
  return (library ??= await import('@platformatic/kafka'));
}

/** The loaded library. Only code that runs after `loadKafkaLibrary` (behind a KafkaHandle) calls this. */
export function kafkaLibrary(): KafkaLibrary {
  if (library === undefined) throw new Error('the Kafka client library is not loaded yet (openKafka loads it)');
  return library;
}

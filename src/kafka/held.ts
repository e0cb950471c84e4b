// The seats Kafka holds beyond the database's rows: users with a record the worker has not
// consumed yet, and users with a live dead letter. A rebuilt Redis state and `reconcile` count
// them as admitted, whatever Redis lost.
import type { KafkaHandle } from './client.js';
import { liveDeadLetters } from './dead-letters.js';
import { decodeFields } from './records.js';

/** Coupon id → users whose seat a record on the topic (unconsumed, or dead-lettered) holds. */
export async function heldInKafka(kafka: KafkaHandle): Promise<Map<number, Set<string>>> {
  const held = new Map<number, Set<string>>();
  const add = (couponId: number, user: string | undefined) => {
    if (!Number.isSafeInteger(couponId) || couponId <= 0 || user === undefined || user === '') return;
    let set = held.get(couponId);
    if (set === undefined) held.set(couponId, (set = new Set()));
    set.add(user);
  };
  for (const r of await kafka.unconsumed()) {
    const f = decodeFields(r.value);
    if (f !== undefined) add(Number(f.get('c')), f.get('u'));
  }
  for (const d of await liveDeadLetters(kafka)) add(d.couponId, d.entry.u);
  return held;
}

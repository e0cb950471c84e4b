// Parsing of Redis Stream replies (RESP2 arrays as ioredis returns them) into typed values, and
// stream-id arithmetic. Replies are checked, not cast: a surprise is an error, not a wrong value.

export interface StreamEntry {
  readonly id: string;
  /** Field → value; a deleted entry (still pending, trimmed or XDEL'd) has none. */
  readonly fields: ReadonlyMap<string, string>;
  /** The raw field/value list, to copy an entry as it is. */
  readonly raw: readonly string[];
}

export interface PendingInfo {
  readonly id: string;
  readonly consumer: string;
  readonly idleMs: number;
  readonly deliveries: number;
}

function fail(what: string): never {
  throw new Error(`unexpected Redis reply: ${what}`);
}

function asArray(v: unknown, what: string): unknown[] {
  return Array.isArray(v) ? v : fail(`${what} is not an array`);
}

function asString(v: unknown, what: string): string {
  if (typeof v === 'string') return v;
  if (Buffer.isBuffer(v)) return v.toString('utf8');
  return fail(`${what} is not a string`);
}

export function parseEntry(v: unknown): StreamEntry {
  const [id, list] = asArray(v, 'entry');
  const raw = list === null ? [] : asArray(list, 'entry fields').map((x) => asString(x, 'field'));
  const fields = new Map<string, string>();
  for (let i = 0; i + 1 < raw.length; i += 2) fields.set(raw[i]!, raw[i + 1]!);
  return { id: asString(id, 'entry id'), fields, raw };
}

/** XRANGE / XREVRANGE. */
export function parseEntries(v: unknown): StreamEntry[] {
  return asArray(v, 'entries').map(parseEntry);
}

/** XREADGROUP / XREAD: stream key → entries (null reply → empty). */
export function parseRead(v: unknown): Array<{ key: string; entries: StreamEntry[] }> {
  if (v === null) return [];
  return asArray(v, 'read').map((s) => {
    const [key, entries] = asArray(s, 'stream');
    return { key: asString(key, 'stream key'), entries: parseEntries(entries) };
  });
}

/** XAUTOCLAIM (Redis 7): next cursor, claimed entries, ids that no longer exist. */
export function parseAutoClaim(v: unknown): { next: string; entries: StreamEntry[]; deleted: string[] } {
  const [next, entries, deleted] = asArray(v, 'xautoclaim');
  return {
    next: asString(next, 'cursor'),
    entries: parseEntries(entries),
    deleted: deleted === undefined ? [] : asArray(deleted, 'deleted').map((x) => asString(x, 'deleted id')),
  };
}

/** XPENDING key group [IDLE n] start end count [consumer]. */
export function parsePending(v: unknown): PendingInfo[] {
  return asArray(v, 'xpending').map((p) => {
    const [id, consumer, idle, deliveries] = asArray(p, 'pending');
    return { id: asString(id, 'id'), consumer: asString(consumer, 'consumer'), idleMs: Number(idle), deliveries: Number(deliveries) };
  });
}

/** XPENDING key group (summary): count and smallest pending id. */
export function parsePendingSummary(v: unknown): { count: number; smallest: string | undefined } {
  const [count, smallest] = asArray(v, 'xpending summary');
  return { count: Number(count), smallest: smallest === null || smallest === undefined ? undefined : asString(smallest, 'smallest') };
}

/** XINFO GROUPS: the fields we use of each group. */
export function parseGroups(v: unknown): Array<{ name: string; pending: number; lastDeliveredId: string }> {
  return asArray(v, 'xinfo groups').map((g) => {
    const flat = asArray(g, 'group');
    const map = new Map<string, unknown>();
    for (let i = 0; i + 1 < flat.length; i += 2) map.set(asString(flat[i], 'group field'), flat[i + 1]);
    return {
      name: asString(map.get('name'), 'group name'),
      pending: Number(map.get('pending')),
      lastDeliveredId: asString(map.get('last-delivered-id'), 'last-delivered-id'),
    };
  });
}

/** Compares two stream ids ("ms-seq"). */
export function compareIds(a: string, b: string): number {
  const [am, as] = splitId(a);
  const [bm, bs] = splitId(b);
  return am !== bm ? (am < bm ? -1 : 1) : as === bs ? 0 : as < bs ? -1 : 1;
}

/** The smallest id greater than `id`. */
export function nextId(id: string): string {
  const [ms, seq] = splitId(id);
  return `${ms}-${seq + 1n}`;
}

function splitId(id: string): [bigint, bigint] {
  const m = /^(\d+)-(\d+)$/.exec(id);
  if (m === null) throw new Error(`not a stream id: ${id}`);
  return [BigInt(m[1]!), BigInt(m[2]!)];
}

/** A Redis error reply with this code prefix (NOGROUP, BUSYGROUP, NOSCRIPT…). */
export function isReplyError(err: unknown, code: string): boolean {
  return err instanceof Error && err.message.startsWith(code);
}

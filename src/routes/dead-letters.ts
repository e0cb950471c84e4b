// Admin endpoints for the worker's dead letters: list them, replay them once the cause is fixed,
// discard the ones that will never be honoured (the user gets their seat back and may try again).
// Registered by the app when Redis is configured; admin bearer auth like every /admin route. With
// Kafka configured they cover the issuance topic's dead letters too (`queue: kafka`).
import type { FastifyInstance } from 'fastify';
import Type, { type Static } from 'typebox';
import { couponIdOf } from '../coupons/ids.js';
import type { Db } from '../db/index.js';
import type { KafkaHandle } from '../kafka/client.js';
import type { KafkaDeadLetter } from '../kafka/dead-letters.js';
import type { RedisHandle } from '../redis/client.js';
import { discardDeadLetters, isStreamId, listDeadLetters, listDiscarded, replayDeadLetters, type DeadLetter } from '../worker/dead-letters.js';
import { KafkaDeadLetters } from '../worker/kafka-dead-letters.js';
import { adminOnly, adminSecurity, CouponIdInteger, couponIdText, type AdminCheck } from './schemas.js';

export interface DeadLetterRouteOptions {
  readonly redis: RedisHandle;
  readonly kafka?: KafkaHandle | undefined;
  readonly db: Db;
  readonly requireAdmin: AdminCheck;
}

type Listed = DeadLetter & { readonly queue: 'redis-stream' | 'kafka'; readonly truncated?: boolean };

/** A Kafka dead letter in the stream dead letters' shape (its id is partition-offset). */
function listedKafka(d: KafkaDeadLetter): Listed {
  const settled = d.settled?.how === 'discarded' ? { state: 'discarded' as const, settledAt: d.settled.at } : { state: 'held' as const };
  return { couponId: d.couponId, id: d.id, sourceId: d.id, reason: d.reason, deliveries: d.deliveries, failedAt: d.failedAt, entry: d.entry, queue: 'kafka', truncated: d.truncated, ...settled };
}

const STREAM_ID = '^[0-9]{1,20}-[0-9]{1,20}$';
const ID_RANGE =
  'A Redis stream id is two unsigned 64-bit integers (each at most 18446744073709551615); a Kafka one is partition-offset ' +
  '(partition at most 2147483647, offset at most 9223372036854775807). Every id is checked before anything is done: ' +
  'one malformed or out of range is a 400 VALIDATION_FAILED naming it (errors[].pointer #/ids/<index>), and nothing is replayed or discarded.';

const DeadLetterView = Type.Object({
  couponId: Type.Integer(),
  id: Type.String({ description: 'id in the dead-letter stream (Kafka: the source record\'s partition-offset); replay and discard take it' }),
  sourceId: Type.String({ description: 'id the entry had in the issuance stream' }),
  reason: Type.String(),
  deliveries: Type.Integer(),
  failedAt: Type.String(),
  entry: Type.Record(Type.String(), Type.String(), { description: 'the entry: c (coupon), u (user), t (admitted at, ms), r (request id)' }),
  queue: Type.Union([Type.Literal('redis-stream'), Type.Literal('kafka')], { description: "where it came from: a campaign's Redis Stream, or the Kafka topic (id = partition-offset)" }),
  state: Type.Union([Type.Literal('held'), Type.Literal('discarded')], {
    description: 'held: waiting for a replay or a discard (its user, if admitted, hears HELD); discarded: settled by a discard, at settledAt (replayed ones are not listed)',
  }),
  settledAt: Type.Optional(Type.String({ description: 'when it was discarded' })),
  truncated: Type.Optional(Type.Boolean({ description: 'Kafka: only part of the record was kept; it can be discarded, never replayed' })),
});

// Query strings stay strings (the app does not coerce types): digits only, converted below.
const ListQuery = Type.Object(
  {
    couponId: Type.Optional(couponIdText()),
    limit: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,2}$|^1000$', description: '1-1000, default 100' })),
    state: Type.Optional(Type.Union([Type.Literal('held'), Type.Literal('discarded')], { description: 'only these (default: held ones first, then discarded ones)' })),
  },
  { additionalProperties: false },
);

const IdsBody = (what: string) =>
  Type.Object(
    {
      couponId: CouponIdInteger,
      ids: Type.Optional(Type.Array(Type.String({ pattern: STREAM_ID }), { minItems: 1, maxItems: 1000, description: `omit to ${what} all of the coupon's dead letters` })),
    },
    { additionalProperties: false },
  );
const ReplayBody = IdsBody('replay');
const DiscardBody = IdsBody('discard');

const Refused = Type.Array(
  Type.Object({
    id: Type.String(),
    reason: Type.Union([Type.Literal('truncated'), Type.Literal('in-progress')], {
      description: 'truncated: a Kafka dead letter that kept only part of its record (discard it instead); in-progress: another replay or discard of it is under way (ask again)',
    }),
  }),
  { description: 'found, and left as it was' },
);

/**
 * Ids the pattern lets through but no store can hold (a part beyond 64 bits): a 400 naming each,
 * in the shape of the schema's own errors (the problem handler renders it), before anything is done.
 */
function checkIds(ids: readonly string[] | undefined): void {
  const bad = (ids ?? []).flatMap((id, i) => (isStreamId(id) ? [] : [i]));
  if (bad.length === 0) return;
  const message = 'is out of range: each part of an id is at most 18446744073709551615';
  throw Object.assign(new Error(`body/ids ${bad.map((i) => `#${i} (${ids![i]})`).join(', ')} ${message}; nothing was done`), {
    statusCode: 400,
    validationContext: 'body',
    validation: bad.map((i) => ({ keyword: 'range', instancePath: `/ids/${i}`, schemaPath: '#/properties/ids/items', params: {}, message })),
  });
}

export async function deadLetterRoutes(app: FastifyInstance, { redis, kafka, db, requireAdmin }: DeadLetterRouteOptions): Promise<void> {
  const onRequest = adminOnly(requireAdmin);
  const fromKafka = kafka === undefined ? undefined : new KafkaDeadLetters(redis, kafka, db);

  app.get<{ Querystring: Static<typeof ListQuery> }>(
    '/admin/dead-letters',
    {
      onRequest,
      schema: {
        tags: ['admin'],
        summary: 'Issuances the worker could not persist, with the reason: held ones (oldest first), then discarded ones',
        security: adminSecurity,
        querystring: ListQuery,
        response: { 200: Type.Object({ items: Type.Array(DeadLetterView) }) },
      },
    },
    async (request) => {
      const asked = request.query.couponId;
      const couponId = asked === undefined ? undefined : couponIdOf(asked);
      if (asked !== undefined && couponId === undefined) return { items: [] }; // past any coupon's id
      const limit = Number(request.query.limit ?? 100);
      const want = request.query.state;
      const onTopic = fromKafka === undefined ? [] : (await fromKafka.read(couponId)).filter((d) => d.settled === undefined || d.settled.how === 'discarded').map(listedKafka);
      const items: Listed[] = [];
      const add = async (state: 'held' | 'discarded') => {
        if (want !== undefined && want !== state) return;
        const list = state === 'held' ? listDeadLetters : listDiscarded;
        if (items.length < limit) items.push(...(await list(redis, { couponId, limit: limit - items.length })).map((d) => ({ ...d, queue: 'redis-stream' as const })));
        items.push(...onTopic.filter((d) => d.state === state).slice(0, Math.max(0, limit - items.length)));
      };
      await add('held');
      await add('discarded');
      return { items };
    },
  );

  app.post<{ Body: Static<typeof ReplayBody> }>(
    '/admin/dead-letters/replay',
    {
      onRequest,
      schema: {
        tags: ['admin'],
        summary: 'Put dead letters back on the issuance stream or topic (after fixing their cause)',
        description:
          'Each id is replayed at most once however many replays race; a replayed one is no longer listed, and its user hears PENDING again instead of HELD. ' +
          'A replayed Kafka record keeps its original key and authenticator, and the worker validates it as a new one. ' +
          'A truncated Kafka dead letter is not replayed: it comes back in `refused` with reason `truncated` (only a discard settles it); the other ids of the request are replayed. ' +
          ID_RANGE,
        security: adminSecurity,
        body: ReplayBody,
        response: {
          200: Type.Object({
            replayed: Type.Array(Type.Object({ id: Type.String(), streamId: Type.String({ description: 'its new id in the issuance stream (Kafka: partition-offset on the topic)' }) })),
            notFound: Type.Array(Type.String(), { description: 'no such live dead letter: a wrong id, or already replayed or discarded' }),
            refused: Refused,
          }),
        },
      },
    },
    async (request) => {
      const { couponId, ids } = request.body;
      checkIds(ids);
      if (fromKafka === undefined) return replayDeadLetters(redis, couponId, ids);
      // Both id forms are digits-dash-digits: the Kafka dead letters of the coupon answer first,
      // the stream's take the ids the topic does not know.
      const k = await fromKafka.replay(couponId, ids);
      const s = ids !== undefined && k.unknown.length === 0 ? undefined : await replayDeadLetters(redis, couponId, ids === undefined ? undefined : k.unknown);
      return { replayed: [...k.replayed, ...(s?.replayed ?? [])], notFound: [...k.notFound, ...(s?.notFound ?? [])], refused: [...k.refused, ...(s?.refused ?? [])] };
    },
  );

  app.post<{ Body: Static<typeof DiscardBody> }>(
    '/admin/dead-letters/discard',
    {
      onRequest,
      schema: {
        tags: ['admin'],
        summary: 'Give up dead letters for good: release the seat and admission they hold (the user may issue again)',
        description:
          'Each id is settled at most once however many requests race (a replay and a discard of one id included). ' +
          'A discarded dead letter holding a seat gives it back, with its user\'s admission, unless the user has a row (released: true when it did); ' +
          'one that holds none (a Kafka record that failed validation) is only marked discarded. Its user no longer hears HELD. ' +
          'It stays listed, with state discarded. ' +
          ID_RANGE,
        security: adminSecurity,
        body: DiscardBody,
        response: {
          200: Type.Object({
            discarded: Type.Array(Type.Object({ id: Type.String(), released: Type.Boolean({ description: 'the seat and the admission were given back' }) })),
            notFound: Type.Array(Type.String(), { description: 'no such live dead letter: a wrong id, or already replayed or discarded' }),
            refused: Refused,
          }),
        },
      },
    },
    async (request) => {
      const { couponId, ids } = request.body;
      checkIds(ids);
      if (fromKafka === undefined) return discardDeadLetters(redis, db, couponId, ids);
      const k = await fromKafka.discard(couponId, ids);
      const s = ids !== undefined && k.unknown.length === 0 ? undefined : await discardDeadLetters(redis, db, couponId, ids === undefined ? undefined : k.unknown);
      return { discarded: [...k.discarded, ...(s?.discarded ?? [])], notFound: [...k.notFound, ...(s?.notFound ?? [])], refused: [...k.refused, ...(s?.refused ?? [])] };
    },
  );
}

// Admin endpoints for the worker's dead letters: list them, replay them once the cause is fixed.
// Registered by the app when Redis is configured; admin bearer auth like every /admin route. With
// Kafka configured they cover the issuance topic's dead letters too (`queue: kafka`).
import type { FastifyInstance, FastifyRequest } from 'fastify';
import Type, { type Static } from 'typebox';
import { MAX_COUPON_ID } from '../coupons/domain.js';
import type { KafkaHandle } from '../kafka/client.js';
import { liveDeadLetters, replayKafkaDeadLetters } from '../kafka/dead-letters.js';
import type { RedisHandle } from '../redis/client.js';
import { listDeadLetters, replayDeadLetters, type DeadLetter } from './dead-letters.js';

export interface DeadLetterRouteOptions {
  redis: RedisHandle;
  kafka?: KafkaHandle | undefined;
  requireAdmin: (request: FastifyRequest) => void;
}

type Listed = DeadLetter & { readonly queue: 'redis-stream' | 'kafka' };

/** The Kafka dead letters in the stream dead letters' shape (their id is partition-offset). */
async function kafkaDeadLetters(kafka: KafkaHandle, couponId: number | undefined, limit: number): Promise<Listed[]> {
  const live = await liveDeadLetters(kafka);
  return live
    .filter((d) => couponId === undefined || d.couponId === couponId)
    .slice(0, limit)
    .map((d) => ({ couponId: d.couponId, id: d.id, sourceId: d.id, reason: d.reason, deliveries: d.deliveries, failedAt: d.failedAt, entry: d.entry, queue: 'kafka' as const }));
}

const STREAM_ID = '^[0-9]{1,20}-[0-9]{1,20}$';

const DeadLetterView = Type.Object({
  couponId: Type.Integer(),
  id: Type.String({ description: 'id in the dead-letter stream; replay takes it' }),
  sourceId: Type.String({ description: 'id the entry had in the issuance stream' }),
  reason: Type.String(),
  deliveries: Type.Integer(),
  failedAt: Type.String(),
  entry: Type.Record(Type.String(), Type.String(), { description: 'the entry: c (coupon), u (user), t (admitted at, ms), r (request id)' }),
  queue: Type.Union([Type.Literal('redis-stream'), Type.Literal('kafka')], { description: "where it came from: a campaign's Redis Stream, or the Kafka topic (id = partition-offset)" }),
});

// Query strings stay strings (the app does not coerce types): digits only, converted below.
const ListQuery = Type.Object(
  {
    couponId: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,9}$' })),
    limit: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,2}$|^1000$', description: '1-1000, default 100' })),
  },
  { additionalProperties: false },
);

const ReplayBody = Type.Object(
  {
    couponId: Type.Integer({ minimum: 1, maximum: MAX_COUPON_ID }),
    ids: Type.Optional(Type.Array(Type.String({ pattern: STREAM_ID }), { minItems: 1, maxItems: 1000, description: 'omit to replay all of the coupon\'s dead letters' })),
  },
  { additionalProperties: false },
);

const adminSecurity: Array<Record<string, string[]>> = [{ bearerAuth: [] }];

export async function deadLetterRoutes(app: FastifyInstance, { redis, kafka, requireAdmin }: DeadLetterRouteOptions): Promise<void> {
  const adminOnly = async (request: FastifyRequest) => requireAdmin(request);

  app.get<{ Querystring: Static<typeof ListQuery> }>(
    '/admin/dead-letters',
    {
      onRequest: adminOnly,
      schema: {
        tags: ['admin'],
        summary: 'Issuances the worker could not persist, with the reason (oldest first)',
        security: adminSecurity,
        querystring: ListQuery,
        response: { 200: Type.Object({ items: Type.Array(DeadLetterView) }) },
      },
    },
    async (request) => {
      const couponId = request.query.couponId === undefined ? undefined : Number(request.query.couponId);
      if (couponId !== undefined && couponId > MAX_COUPON_ID) return { items: [] };
      const limit = Number(request.query.limit ?? 100);
      const items: Listed[] = (await listDeadLetters(redis, { couponId, limit })).map((d) => ({ ...d, queue: 'redis-stream' as const }));
      if (kafka !== undefined && items.length < limit) items.push(...(await kafkaDeadLetters(kafka, couponId, limit - items.length)));
      return { items };
    },
  );

  app.post<{ Body: Static<typeof ReplayBody> }>(
    '/admin/dead-letters/replay',
    {
      onRequest: adminOnly,
      schema: {
        tags: ['admin'],
        summary: 'Put dead letters back on the issuance stream (after fixing their cause)',
        security: adminSecurity,
        body: ReplayBody,
        response: {
          200: Type.Object({
            replayed: Type.Array(Type.Object({ id: Type.String(), streamId: Type.String() })),
            notFound: Type.Array(Type.String()),
          }),
        },
      },
    },
    async (request) => {
      const { couponId, ids } = request.body;
      if (kafka === undefined) return replayDeadLetters(redis, couponId, ids);
      // Both id forms are digits-dash-digits: the Kafka dead letters of the coupon answer first,
      // the stream's take the ids left over.
      const fromKafka = await replayKafkaDeadLetters(kafka, couponId, ids);
      const rest = ids === undefined ? undefined : fromKafka.notFound;
      if (rest !== undefined && rest.length === 0) return fromKafka;
      const fromStream = await replayDeadLetters(redis, couponId, rest);
      return { replayed: [...fromKafka.replayed, ...fromStream.replayed], notFound: fromStream.notFound };
    },
  );
}

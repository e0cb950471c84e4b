// The admission channel: the one connection of a process that queued admissions (admit-enqueue,
// admit-produce) are written on. Being a connection of its own, nothing else shares its socket,
// which gives two guarantees (docs/architecture.md, invariant 11):
//
//   primary check  Before the first admission on a socket (start-up, reconnect, a failover followed
//                  through Sentinel) it asks the server its run id. One unlike the id recorded
//                  under {prefix}primary means the data set is another server's — a promoted
//                  replica, or a restart — and may lack admissions the old one acknowledged: every
//                  active campaign is settled against the database and its queue (onNewPrimary)
//                  before this process admits anything there, then the new id is recorded. An
//                  admission is written only while the socket is the checked one, ready and
//                  writable (so ioredis writes it at once instead of queueing it for a later socket).
//   WAIT           With REDIS_WAIT_REPLICAS=N, once a script has answered, one `WAIT N timeout` on
//                  the same socket covers every script answered in that event-loop turn (WAIT
//                  counts the replicas that have this connection's writes). Fewer than N in time:
//                  the admissions are not confirmed, and the caller answers OUTCOME_UNKNOWN.
//
// A write the primary refuses outright (NOREPLICAS, from min-replicas-to-write) did nothing: it is
// thrown as it is, and the route answers 503.
import type { Redis } from 'ioredis';
import { ACCEPTED, OUTCOME_UNKNOWN } from '../coupons/domain.js';
import type { Logger } from '../util/logger.js';
import type { CampaignKeys, RedisKeys } from './keys.js';
import { NotSentError, Scripts, type AdmissionAttempt, type AdmitEnqueueResult } from './scripts.js';

/** A queued admission's result on the channel: ACCEPTED only once the replicas confirmed it. */
export type ChannelAdmission = AdmitEnqueueResult | typeof OUTCOME_UNKNOWN;

export interface AdmissionChannelOptions {
  /** REDIS_WAIT_REPLICAS: replicas that must have an admission before it is confirmed (0: none). */
  readonly waitReplicas: number;
  /** REDIS_WAIT_TIMEOUT_MS: WAIT's own timeout. */
  readonly waitTimeoutMs: number;
}

/** What a script call on the channel answered, and whether enough replicas have its writes. */
export interface Sent<T> {
  readonly result: T;
  /** True without REDIS_WAIT_REPLICAS, or when `confirm` was off. */
  readonly confirmed: boolean;
}

/** Settles every active campaign against the database and its queue (the coupons layer provides it). */
export type SettleCampaigns = () => Promise<void>;

/** A disconnected channel waits this long for its socket before the admission fails unsent (503). */
const READY_WAIT_MS = 500;
/** Checks of a socket before giving up (each ends with a different socket only when the connection flaps). */
const CHECK_ATTEMPTS = 3;

interface PendingWait {
  readonly socket: unknown;
  readonly confirmed: Promise<boolean>;
  sent: boolean;
}

export class AdmissionChannel {
  readonly scripts: Scripts;
  /** Admissions answered OUTCOME_UNKNOWN because fewer than `waitReplicas` replicas confirmed them in time. */
  unconfirmed = 0;
  /** Times this process found a different primary (or a restarted one) and settled the campaigns. */
  settles = 0;
  /** Until the runtime wires the service's settle, a new primary cannot be trusted: admissions fail (503). */
  private settle: SettleCampaigns = () => Promise.reject(new Error('redis: the primary changed and this process has nothing to settle the campaigns with'));
  private checkedSocket: unknown;
  private checking: Promise<void> | undefined;
  private nextWait: PendingWait | undefined;

  constructor(
    readonly connection: Redis,
    private readonly keys: RedisKeys,
    private readonly log: Logger,
    readonly options: AdmissionChannelOptions,
  ) {
    this.scripts = new Scripts(connection);
  }

  /** What to do on a new primary before admitting there (once per process; the runtime wires it). */
  onNewPrimary(settle: SettleCampaigns): void {
    this.settle = settle;
  }

  /**
   * Writes one script call on a checked socket; with `confirm` and REDIS_WAIT_REPLICAS, waits for
   * the replicas. Throws NotSentError when no checked socket was ready (nothing was sent).
   */
  async send<T>(call: (scripts: Scripts) => Promise<T>, confirm: boolean): Promise<Sent<T>> {
    for (let attempt = 1; !this.onCheckedSocket(); attempt++) {
      if (attempt > CHECK_ATTEMPTS) throw new NotSentError(new Error('Stream isn\'t writeable: no checked connection to the Redis primary'));
      await this.check();
    }
    const socket = this.connection.stream;
    // Written to `socket` now: the connection is ready and the socket writable (onCheckedSocket).
    const result = await call(this.scripts);
    if (!confirm || this.options.waitReplicas === 0) return { result, confirmed: true };
    return { result, confirmed: await this.replicated(socket) };
  }

  /**
   * admit-enqueue (redis-lua-async*): the 202 rests on this write, so with REDIS_WAIT_REPLICAS an
   * admission the replicas did not confirm in time is OUTCOME_UNKNOWN (it may survive a failover
   * or not; the status route tells the user later).
   */
  async admitEnqueue(keys: CampaignKeys, couponId: string, attempts: readonly AdmissionAttempt[]): Promise<ChannelAdmission[]> {
    const { result, confirmed } = await this.send((s) => s.admitEnqueue(keys, couponId, attempts), true);
    if (confirmed) return result;
    const out = result.map((r) => (r === ACCEPTED ? OUTCOME_UNKNOWN : r));
    this.unconfirmed += out.filter((r) => r === OUTCOME_UNKNOWN).length;
    return out;
  }

  /**
   * admit-produce (redis-lua-kafka): not waited for — its 202 rests on Kafka's acknowledgement,
   * and after a failover the settle counts the topic's records.
   */
  async admitProduce(keys: CampaignKeys, attempts: readonly AdmissionAttempt[]): Promise<AdmitEnqueueResult[]> {
    return (await this.send((s) => s.admitProduce(keys, attempts), false)).result;
  }

  /** Whether an admission found in Redis after its call failed may be said to be ACCEPTED (WAIT could not confirm it). */
  get confirmsAdmissions(): boolean {
    return this.options.waitReplicas > 0;
  }

  private onCheckedSocket(): boolean {
    const c = this.connection;
    return c.status === 'ready' && c.stream !== undefined && c.stream === this.checkedSocket && c.stream.writable;
  }

  /** One check at a time; callers arriving meanwhile wait for it. */
  private check(): Promise<void> {
    this.checking ??= this.checkSocket().finally(() => (this.checking = undefined));
    return this.checking;
  }

  private async checkSocket(): Promise<void> {
    await this.ready();
    const socket = this.connection.stream;
    const runId = /^run_id:([0-9a-f]+)/m.exec(await this.connection.info('server'))?.[1];
    if (runId === undefined) throw new Error('redis: INFO server has no run_id');
    const recorded = await this.connection.get(this.keys.primary);
    if (recorded !== null && recorded !== runId) {
      // Another server's data set (a promoted replica; a restart): what the old one acknowledged
      // and did not pass on is missing here. Settle before admitting; a failure leaves the socket
      // unchecked, and the next admission tries again (503 meanwhile).
      this.log.warn({ was: recorded, now: runId }, 'redis: the primary changed; settling the active campaigns against the database before admitting');
      await this.settle();
      this.settles++;
      this.log.warn({ now: runId }, 'redis: campaigns settled on the new primary; admitting again');
    }
    if (recorded !== runId) await this.connection.set(this.keys.primary, runId);
    if (this.connection.stream === socket) this.checkedSocket = socket;
  }

  private ready(): Promise<void> {
    const c = this.connection;
    if (c.status === 'ready') return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onReady = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        c.off('ready', onReady);
        reject(new NotSentError(new Error(`Stream isn't writeable: Redis connection not ready within ${READY_WAIT_MS} ms (${c.status})`)));
      }, READY_WAIT_MS);
      c.once('ready', onReady);
    });
  }

  /**
   * True once `waitReplicas` replicas have every write of this socket so far. One WAIT per event-
   * loop turn serves every script that answered before it is written.
   */
  private replicated(socket: unknown): Promise<boolean> {
    const pending = this.nextWait;
    if (pending !== undefined && !pending.sent && pending.socket === socket) return pending.confirmed;
    let resolveWait!: (ok: boolean) => void;
    const wait: PendingWait = { socket, sent: false, confirmed: new Promise((r) => (resolveWait = r)) };
    this.nextWait = wait;
    setImmediate(() => {
      wait.sent = true;
      const c = this.connection;
      // On another socket WAIT would count that socket's writes (none), not ours.
      if (c.status !== 'ready' || c.stream !== socket || !c.stream.writable) {
        resolveWait(false);
        return;
      }
      c.call('WAIT', this.options.waitReplicas, this.options.waitTimeoutMs).then(
        (n) => resolveWait(Number(n) >= this.options.waitReplicas),
        (err: unknown) => {
          this.log.warn({ err }, 'redis: WAIT failed; the admissions it covered are not confirmed');
          resolveWait(false);
        },
      );
    });
    return wait.confirmed;
  }
}

// The admission channel: the connection of a process that queued admissions (admit-enqueue,
// admit-produce) are written on — one lane to the primary (REDIS_URL, Sentinel), or a lane per
// Cluster master, picked by the campaign's hash slot. A lane's socket carries nothing else, which
// gives two guarantees (docs/architecture.md, invariant 11):
//
//   primary check  Before the first admission on a socket (start-up, reconnect, a failover
//                  followed through Sentinel or the Cluster) the lane asks the server its run id.
//                  One unlike the id recorded for it in Redis (the marker key) means the data set
//                  is another server's — a promoted replica, or a restart — and may lack admissions
//                  the old one acknowledged: every active campaign is settled against the database
//                  and its queue (onNewPrimary) before this process admits anything there, then
//                  the new id is recorded. An admission is written only while the socket is the
//                  checked one, ready and writable (so ioredis writes it at once instead of
//                  queueing it for a later socket).
//   WAIT           With REDIS_WAIT_REPLICAS=N, once a script has answered, one `WAIT N timeout` on
//                  the same socket covers every script answered in that event-loop turn (WAIT
//                  counts the replicas that have this connection's writes). Fewer than N in time:
//                  the admissions are not confirmed, and the caller answers OUTCOME_UNKNOWN.
//
// A write the primary refuses outright (NOREPLICAS, from min-replicas-to-write) did nothing: it is
// thrown as it is, and the route answers 503.
import calculateSlot from 'cluster-key-slot';
import type { Cluster, Redis } from 'ioredis';
import { ACCEPTED, OUTCOME_UNKNOWN } from '../coupons/domain.js';
import type { Logger } from '../util/logger.js';
import type { CampaignKeys, RedisKeys } from './keys.js';
import { NotSentError, Scripts, type AdmissionAttempt, type AdmitEnqueueResult } from './scripts.js';

export interface AdmissionChannelOptions {
  /** REDIS_WAIT_REPLICAS: replicas that must have an admission before it is confirmed (0: none). */
  readonly waitReplicas: number;
  /** REDIS_WAIT_TIMEOUT_MS: WAIT's own timeout. */
  readonly waitTimeoutMs: number;
}

/** A queued admission's result on the channel: ACCEPTED only once the replicas confirmed it. */
export type ChannelAdmission = AdmitEnqueueResult | typeof OUTCOME_UNKNOWN;

/** Settles every active campaign against the database and its queue (the coupons layer provides it). */
export type SettleCampaigns = () => Promise<void>;

/** A disconnected lane waits this long for its socket before the admission fails unsent (503). */
const READY_WAIT_MS = 500;
/** Checks of a socket before giving up (each ends with a different socket only when the connection flaps). */
const CHECK_ATTEMPTS = 3;

interface PendingWait {
  readonly socket: unknown;
  readonly confirmed: Promise<boolean>;
  sent: boolean;
}

/** What the lanes share: the settle to run on a new primary, the options, the counters. */
class LaneContext {
  /** Admissions answered OUTCOME_UNKNOWN because fewer than `waitReplicas` replicas confirmed them in time. */
  unconfirmed = 0;
  /** Times this process found a different primary (or a restarted one) and settled the campaigns. */
  settles = 0;
  /** Until the runtime wires the service's settle, a new primary cannot be trusted: admissions fail (503). */
  settle: SettleCampaigns = () => Promise.reject(new Error('redis: the primary changed and this process has nothing to settle the campaigns with'));

  constructor(
    readonly log: Logger,
    readonly options: AdmissionChannelOptions,
  ) {}
}

/** One connection to one primary: its check, its scripts, its WAIT. */
class Lane {
  readonly scripts: Scripts;
  private checkedSocket: unknown;
  private checking: Promise<void> | undefined;
  private nextWait: PendingWait | undefined;

  constructor(
    readonly connection: Redis,
    /** Where this primary's run id is recorded (a key of one of its own slots, on a Cluster). */
    private readonly marker: string,
    private readonly ctx: LaneContext,
  ) {
    this.scripts = new Scripts(connection);
  }

  /**
   * Writes one script call on a checked socket; with `confirm` and REDIS_WAIT_REPLICAS, waits for
   * the replicas. Throws NotSentError when no checked socket was ready (nothing was sent).
   */
  async send<T>(call: (scripts: Scripts) => Promise<T>, confirm: boolean): Promise<{ result: T; confirmed: boolean }> {
    for (let attempt = 1; !this.onCheckedSocket(); attempt++) {
      if (attempt > CHECK_ATTEMPTS) throw new NotSentError(new Error("Stream isn't writeable: no checked connection to the Redis primary"));
      await this.check();
    }
    const socket = this.connection.stream;
    // Written to `socket` now: the connection is ready and the socket writable (onCheckedSocket).
    const result = await call(this.scripts);
    if (!confirm || this.ctx.options.waitReplicas === 0) return { result, confirmed: true };
    return { result, confirmed: await this.replicated(socket) };
  }

  get ended(): boolean {
    return this.connection.status === 'end';
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
    const recorded = await this.connection.get(this.marker);
    if (recorded !== null && recorded !== runId) {
      // Another server's data set (a promoted replica; a restart): what the old one acknowledged
      // and did not pass on is missing here. Settle before admitting; a failure leaves the socket
      // unchecked, and the next admission tries again (503 meanwhile).
      this.ctx.log.warn({ was: recorded, now: runId }, 'redis: the primary changed; settling the active campaigns against the database before admitting');
      await this.ctx.settle();
      this.ctx.settles++;
      this.ctx.log.warn({ now: runId }, 'redis: campaigns settled on the new primary; admitting again');
    }
    if (recorded !== runId) await this.connection.set(this.marker, runId);
    if (this.connection.stream === socket) this.checkedSocket = socket;
  }

  private ready(): Promise<void> {
    const c = this.connection;
    if (c.status === 'ready') return Promise.resolve();
    // A Cluster's node connections open on first use.
    if (c.status === 'wait') c.connect().catch(() => undefined);
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
    const { waitReplicas, waitTimeoutMs } = this.ctx.options;
    setImmediate(() => {
      wait.sent = true;
      const c = this.connection;
      // On another socket WAIT would count that socket's writes (none), not ours.
      if (c.status !== 'ready' || c.stream !== socket || !c.stream.writable) {
        resolveWait(false);
        return;
      }
      c.call('WAIT', waitReplicas, waitTimeoutMs).then(
        (n) => resolveWait(Number(n) >= waitReplicas),
        (err: unknown) => {
          this.ctx.log.warn({ err }, 'redis: WAIT failed; the admissions it covered are not confirmed');
          resolveWait(false);
        },
      );
    });
    return wait.confirmed;
  }
}

/** Picks the lane of a campaign: the one primary, or the Cluster master that owns its slot. */
interface Lanes {
  laneFor(keys: CampaignKeys): Lane;
  readonly connection: Redis | Cluster;
}

class OneLane implements Lanes {
  private readonly lane: Lane;

  constructor(
    readonly connection: Redis,
    keys: RedisKeys,
    ctx: LaneContext,
  ) {
    this.lane = new Lane(connection, keys.primary, ctx);
  }

  laneFor(): Lane {
    return this.lane;
  }
}

/**
 * A lane per Cluster master, over the node connections of a Cluster client of the channel's own
 * (ioredis opens one per node). A campaign's slot says which; a node connection that ended (a
 * master gone) is dropped and the slot map refreshed, so the next admission finds the new master.
 */
class ClusterLanes implements Lanes {
  private readonly lanes = new Map<string, Lane>();

  constructor(
    readonly connection: Cluster,
    private readonly keys: RedisKeys,
    private readonly ctx: LaneContext,
  ) {}

  laneFor(campaign: CampaignKeys): Lane {
    const node = this.connection.slots[calculateSlot(campaign.state)]?.[0];
    if (node === undefined) throw this.notSent('the Cluster slot map does not name a master for this campaign yet');
    let lane = this.lanes.get(node);
    if (lane?.ended === true) {
      this.lanes.delete(node);
      lane = undefined;
    }
    if (lane === undefined) {
      const redis = this.connection.nodes('master').find((r) => `${r.options.host}:${r.options.port}` === node);
      if (redis === undefined || redis.status === 'end') throw this.notSent(`no connection to the Cluster master ${node} yet`);
      lane = new Lane(redis, this.markerOn(node), this.ctx);
      this.lanes.set(node, lane);
    }
    return lane;
  }

  /** A marker key in one of the node's own slots: `{prefix}primary:{n}` for the first n that lands there. */
  private markerOn(node: string): string {
    for (let n = 0; n < 100_000; n++) {
      const key = `${this.keys.primary}:{${n}}`;
      if (this.connection.slots[calculateSlot(key)]?.[0] === node) return key;
    }
    throw new Error(`redis: no slot of ${node} found for its primary marker`);
  }

  private notSent(why: string): NotSentError {
    this.connection.refreshSlotsCache();
    return new NotSentError(new Error(`Stream isn't writeable: ${why}`));
  }
}

export class AdmissionChannel {
  private readonly ctx: LaneContext;
  private readonly lanes: Lanes;

  constructor(connection: Redis | Cluster, keys: RedisKeys, log: Logger, options: AdmissionChannelOptions) {
    this.ctx = new LaneContext(log, options);
    this.lanes = 'slots' in connection && connection.isCluster ? new ClusterLanes(connection, keys, this.ctx) : new OneLane(connection as Redis, keys, this.ctx);
  }

  /** The channel's own connection (its owner closes it). */
  get connection(): Redis | Cluster {
    return this.lanes.connection;
  }

  /** Admissions answered OUTCOME_UNKNOWN for want of replicas so far. */
  get unconfirmed(): number {
    return this.ctx.unconfirmed;
  }

  /** Changes of primary found (and settled) so far. */
  get settles(): number {
    return this.ctx.settles;
  }

  /** What to do on a new primary before admitting there (once per process; the runtime wires it). */
  onNewPrimary(settle: SettleCampaigns): void {
    this.ctx.settle = settle;
  }

  /**
   * admit-enqueue (redis-lua-async*): the 202 rests on this write, so with REDIS_WAIT_REPLICAS an
   * admission the replicas did not confirm in time is OUTCOME_UNKNOWN (it may survive a failover
   * or not; the status route tells the user later).
   */
  async admitEnqueue(keys: CampaignKeys, couponId: string, attempts: readonly AdmissionAttempt[]): Promise<ChannelAdmission[]> {
    const { result, confirmed } = await this.lanes.laneFor(keys).send((s) => s.admitEnqueue(keys, couponId, attempts), true);
    if (confirmed) return result;
    const out = result.map((r) => (r === ACCEPTED ? OUTCOME_UNKNOWN : r));
    this.ctx.unconfirmed += out.filter((r) => r === OUTCOME_UNKNOWN).length;
    return out;
  }

  /**
   * admit-produce (redis-lua-kafka): not waited for — its 202 rests on Kafka's acknowledgement,
   * and after a failover the settle counts the topic's records.
   */
  async admitProduce(keys: CampaignKeys, attempts: readonly AdmissionAttempt[]): Promise<AdmitEnqueueResult[]> {
    return (await this.lanes.laneFor(keys).send((s) => s.admitProduce(keys, attempts), false)).result;
  }

  /** Whether an admission found in Redis after its call failed may be said to be ACCEPTED (WAIT could not confirm it). */
  get confirmsAdmissions(): boolean {
    return this.ctx.options.waitReplicas > 0;
  }
}

// /metrics under `serve --workers N`: the workers share one port, so a scrape lands on any one of
// them. That worker asks the primary, which collects every worker's registry over IPC
// (prom-client's AggregatorRegistry) and answers with the cluster-wide sums.
import cluster from 'node:cluster';
import { AggregatorRegistry, type Registry } from 'prom-client';

const REQUEST = 'couponrush:metrics-request';
const RESPONSE = 'couponrush:metrics-response';
/** prom-client gives up on a silent worker after 5 s; answer the scrape just after that. */
const RENDER_TIMEOUT_MS = 6_000;

interface MetricsRequest {
  type: typeof REQUEST;
  id: number;
}
interface MetricsResponse {
  type: typeof RESPONSE;
  id: number;
  text?: string;
  error?: string;
}

const isRequest = (m: unknown): m is MetricsRequest => (m as { type?: unknown } | null)?.type === REQUEST;
const isResponse = (m: unknown): m is MetricsResponse => (m as { type?: unknown } | null)?.type === RESPONSE;

/** Worker side: answer the primary's collection requests with this registry. */
export function installWorkerResponder(registry: Registry): void {
  AggregatorRegistry.setRegistries([registry]);
  new AggregatorRegistry(); // constructing it installs prom-client's worker listener (idempotent)
}

let nextId = 0;
const pending = new Map<number, (r: MetricsResponse) => void>();
let listening = false;

/** Worker side: the cluster-wide exposition text, via the primary. */
export function renderClusterMetrics(): Promise<string> {
  if (!listening) {
    listening = true;
    process.on('message', (m: unknown) => {
      if (isResponse(m)) pending.get(m.id)?.(m);
    });
  }
  const id = nextId++;
  return new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      pending.delete(id);
      reject(new Error('the cluster primary did not answer the metrics request'));
    }, RENDER_TIMEOUT_MS);
    pending.set(id, (r) => {
      clearTimeout(timer);
      pending.delete(id);
      if (r.text !== undefined) resolve(r.text);
      else reject(new Error(r.error ?? 'metrics aggregation failed'));
    });
    process.send?.({ type: REQUEST, id } satisfies MetricsRequest);
  });
}

/** Primary side: serve the workers' aggregation requests. Call once, before forking. */
export function installPrimaryAggregator(): void {
  const aggregator = new AggregatorRegistry();
  cluster.on('message', (worker, m: unknown) => {
    if (!isRequest(m)) return;
    aggregator.clusterMetrics().then(
      (text) => worker.isConnected() && worker.send({ type: RESPONSE, id: m.id, text } satisfies MetricsResponse),
      (err: unknown) => worker.isConnected() && worker.send({ type: RESPONSE, id: m.id, error: (err as Error).message } satisfies MetricsResponse),
    );
  });
}

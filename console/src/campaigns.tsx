// Campaigns: the open and upcoming ones with their live counts (GET /coupons, every 2 s), and the
// form that creates one with every field of POST /admin/coupons. The API's problem codes are shown
// beside the field they name (the problem's `errors[].pointer`), the rest above the button.
import type { ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { call, isAuthProblem, type ConsoleInfo, type Coupon, type Problem } from './api.js';
import { formatNumber } from './chart.js';
import { span, zoneNote } from './time.js';
import { TableHead } from './ui.js';

const LIST_EVERY_MS = 2_000;

export function Campaigns({ info, onAuthLost }: { info: ConsoleInfo; onAuthLost: (p: Problem) => void }) {
  const [items, setItems] = useState<Coupon[] | undefined>(undefined);
  const [listProblem, setListProblem] = useState<Problem | undefined>(undefined);

  useEffect(() => {
    let stopped = false;
    const load = async () => {
      const r = await call<{ items: Coupon[] }>('GET', '/coupons');
      if (stopped) return;
      if (r.ok) {
        setItems(r.value.items);
        setListProblem(undefined);
      } else setListProblem(r.problem);
    };
    void load();
    const timer = setInterval(() => void load(), LIST_EVERY_MS);
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  }, []);

  return (
    <div class="columns">
      <section aria-labelledby="list-title">
        <h1 id="list-title">Campaigns</h1>
        <p class="hint">Open now or upcoming; refreshed every 2 seconds. Select one to watch it live.</p>
        {listProblem !== undefined && (
          <p class="error" role="alert">
            Could not load the campaigns: {listProblem.title}
            {listProblem.detail === undefined ? '' : ` (${listProblem.detail})`}
          </p>
        )}
        {items === undefined ? (
          <p>Loading…</p>
        ) : items.length === 0 ? (
          <p>No open or upcoming campaign. Create one.</p>
        ) : (
          <div class="table-wrap">
            <table class="campaigns">
              <TableHead columns={['Campaign', 'Status', '#Issued', '#Remaining', '#Stock', 'Strategy', 'Window']} />
              <tbody>
                {items.map((c) => (
                  <tr key={c.id} data-coupon={c.id}>
                    <th scope="row">
                      <a href={`#/campaigns/${c.id}`}>
                        {c.name} <span class="muted">#{c.id}</span>
                      </a>
                    </th>
                    <td>
                      <span class={`status status-${c.status}`}>{c.status.replace('_', ' ')}</span>
                    </td>
                    <td class="num" data-field="issued">
                      {formatNumber(c.issuedCount)}
                    </td>
                    <td class="num" data-field="remaining">
                      {formatNumber(c.remaining)}
                    </td>
                    <td class="num">{formatNumber(c.totalQuantity)}</td>
                    <td>{c.strategy}</td>
                    <td class="muted window" title={span(c.issueStartsAt, c.issueEndsAt, true)}>
                      {span(c.issueStartsAt, c.issueEndsAt)}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </section>
      <CreateForm info={info} onAuthLost={onAuthLost} />
    </div>
  );
}

/** A moment as the window fields show it: `2026-12-06 16:12:39`, the browser's zone, 24-hour. */
function localInput(ms: number): string {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60_000);
  return d.toISOString().slice(0, 19).replace('T', ' ');
}

/** A window field's text as an ISO instant, or the text as typed (the API's validation answers it). */
function moment(v: string): string {
  const m = /^\s*(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2}))?\s*$/.exec(v);
  if (m === null) return v;
  const [y, mo, d, h, mi, s] = m.slice(1).map((x) => Number(x ?? 0)) as [number, number, number, number, number, number];
  const at = new Date(y, mo - 1, d, h, mi, s);
  // 2026-02-30 or 25:00 would roll over into another moment: send those as typed.
  return at.getFullYear() === y && at.getMonth() === mo - 1 && at.getDate() === d && at.getHours() === h && at.getMinutes() === mi ? at.toISOString() : v;
}

type Field = 'name' | 'totalQuantity' | 'issueStartsAt' | 'issueEndsAt' | 'strategy' | 'discountType' | 'discountValue' | 'minOrderAmount';
const FIELDS: readonly Field[] = ['name', 'totalQuantity', 'issueStartsAt', 'issueEndsAt', 'strategy', 'discountType', 'discountValue', 'minOrderAmount'];

function CreateForm({ info, onAuthLost }: { info: ConsoleInfo; onAuthLost: (p: Problem) => void }) {
  const now = Date.now();
  const [form, setForm] = useState<Record<Field, string>>({
    name: '',
    totalQuantity: '100',
    issueStartsAt: localInput(now),
    issueEndsAt: localInput(now + 10 * 60_000),
    strategy: info.defaultStrategy,
    discountType: '',
    discountValue: '',
    minOrderAmount: '',
  });
  const [errors, setErrors] = useState<Partial<Record<Field, string>>>({});
  const [general, setGeneral] = useState<string | undefined>(undefined);
  const [busy, setBusy] = useState(false);
  const set = (f: Field) => (e: Event) => setForm({ ...form, [f]: (e.target as HTMLInputElement).value });

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setErrors({});
    setGeneral(undefined);
    // Numbers go as numbers when they look like one, else as typed: the API's validation answers.
    const num = (v: string) => (v.trim() !== '' && Number.isFinite(Number(v)) ? Number(v) : v);
    const body: Record<string, unknown> = {
      name: form.name,
      totalQuantity: num(form.totalQuantity),
      issueStartsAt: moment(form.issueStartsAt),
      issueEndsAt: moment(form.issueEndsAt),
      strategy: form.strategy,
    };
    if (form.discountType !== '') body.discountType = form.discountType;
    if (form.discountValue !== '') body.discountValue = num(form.discountValue);
    if (form.minOrderAmount !== '') body.minOrderAmount = num(form.minOrderAmount);
    const r = await call<Coupon>('POST', '/admin/coupons', body);
    setBusy(false);
    if (r.ok) {
      location.hash = `#/campaigns/${r.value.id}`;
      return;
    }
    if (isAuthProblem(r.problem)) return onAuthLost(r.problem);
    const byField: Partial<Record<Field, string>> = {};
    const rest: string[] = [];
    for (const fe of r.problem.errors ?? []) {
      const f = fe.pointer.replace(/^#\//, '').split('/')[0] as Field;
      if (FIELDS.includes(f)) byField[f] = `${fe.detail} (${r.problem.code})`;
      else rest.push(fe.detail);
    }
    setErrors(byField);
    if (Object.keys(byField).length === 0 || rest.length > 0) setGeneral(`${r.problem.code}: ${rest.join('; ') || r.problem.detail || r.problem.title}`);
  };

  /** What every control shares: its id and name, its value, and what describes it (hint, error). */
  const bound = (f: Field, hint?: string) => ({
    id: `f-${f}`,
    name: f,
    value: form[f],
    'aria-invalid': errors[f] === undefined ? undefined : ('true' as const),
    'aria-describedby': [hint === undefined ? '' : `h-${f}`, errors[f] === undefined ? '' : `e-${f}`].join(' ').trim() || undefined,
  });
  const field = (f: Field, label: string, control: ComponentChildren, hint?: string) => (
    <div class="field">
      <label for={`f-${f}`}>{label}</label>
      {control}
      {hint !== undefined && (
        <small id={`h-${f}`} class="hint">
          {hint}
        </small>
      )}
      {errors[f] !== undefined && (
        <small id={`e-${f}`} class="error">
          {errors[f]}
        </small>
      )}
    </div>
  );
  const input = (f: Field, label: string, attrs: Record<string, unknown>, hint?: string) => field(f, label, <input {...bound(f, hint)} onInput={set(f)} {...attrs} />, hint);
  const strategyHint = info.strategies.find((s) => s.name === form.strategy)?.summary ?? '';

  return (
    <section aria-labelledby="create-title" class="card">
      <h2 id="create-title">Create a campaign</h2>
      <form onSubmit={submit} noValidate>
        {input('name', 'Name', { type: 'text', maxLength: 200 })}
        {input('totalQuantity', 'Stock (coupons to issue)', { type: 'number', inputMode: 'numeric' })}
        {/* Text, not datetime-local: the browser's picker follows the locale's clock (12-hour in en-US), and every time here is 24-hour. */}
        {input('issueStartsAt', 'Issue window opens', { type: 'text', autocomplete: 'off', spellcheck: false, placeholder: 'YYYY-MM-DD HH:MM:SS' }, `YYYY-MM-DD HH:MM:SS, 24-hour, ${zoneNote()}.`)}
        {input('issueEndsAt', 'Issue window closes', { type: 'text', autocomplete: 'off', spellcheck: false, placeholder: 'YYYY-MM-DD HH:MM:SS' }, 'Exclusive; after the opening.')}
        {field(
          'strategy',
          'Strategy',
          <select {...bound('strategy', strategyHint)} onChange={set('strategy')}>
            {info.strategies.map((s) => (
              <option key={s.name} value={s.name} disabled={s.unavailable !== null}>
                {s.name}
                {s.name === info.defaultStrategy ? ' (default)' : ''}
                {s.unavailable !== null ? ' — unavailable' : ''}
              </option>
            ))}
          </select>,
          strategyHint,
        )}
        {field(
          'discountType',
          'Discount type',
          <select {...bound('discountType')} onChange={set('discountType')}>
            <option value="">none</option>
            <option value="AMOUNT">AMOUNT</option>
            <option value="PERCENT">PERCENT</option>
          </select>,
        )}
        {input('discountValue', 'Discount value', { type: 'number', inputMode: 'numeric' }, 'With a discount type; a percentage is at most 100.')}
        {input('minOrderAmount', 'Minimum order amount', { type: 'number', inputMode: 'numeric' })}
        {general !== undefined && (
          <p class="error" role="alert">
            {general}
          </p>
        )}
        <button type="submit" disabled={busy}>
          Create campaign
        </button>
      </form>
    </section>
  );
}

// How the console writes a moment: one format everywhere, 24-hour, in the browser's time zone,
// which the header names once (`zoneNote`). Hours and minutes are built by hand rather than by
// the locale, whose default clock may be 12-hour; only the month's name comes from the locale.

const two = (n: number) => String(n).padStart(2, '0');
const monthDay = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });

/** 16:12:39 */
export function clock(at: number | Date): string {
  const d = new Date(at);
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

/** 16:12 */
export function hoursMinutes(at: number | Date): string {
  const d = new Date(at);
  return `${two(d.getHours())}:${two(d.getMinutes())}`;
}

const sameDay = (a: Date, b: Date) => a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();

/** Dec 6 16:12:39 */
export function dateTime(at: number | Date | string): string {
  const d = new Date(at);
  return Number.isNaN(d.getTime()) ? '?' : `${monthDay.format(d)} ${clock(d)}`;
}

/** A window in few characters: `Dec 6 16:12 – 16:42` (with seconds: `Dec 6 16:12:36 – 16:42:37`), the second date only when it differs. */
export function span(from: number | Date | string, to: number | Date | string, seconds = false): string {
  const a = new Date(from);
  const b = new Date(to);
  if (Number.isNaN(a.getTime()) || Number.isNaN(b.getTime())) return '?';
  const time = seconds ? clock : hoursMinutes;
  return `${monthDay.format(a)} ${time(a)} – ${sameDay(a, b) ? '' : `${monthDay.format(b)} `}${time(b)}`;
}

/** UTC+9, UTC−3:30, UTC (the offset now). */
export function utcOffset(at = new Date()): string {
  const minutes = -at.getTimezoneOffset();
  if (minutes === 0) return 'UTC';
  const abs = Math.abs(minutes);
  return `UTC${minutes > 0 ? '+' : '−'}${Math.floor(abs / 60)}${abs % 60 === 0 ? '' : `:${two(abs % 60)}`}`;
}

/** Asia/Seoul (UTC+9) */
export function zoneNote(): string {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const offset = utcOffset();
  return zone === undefined || zone === '' || zone === offset ? offset : `${zone} (${offset})`;
}

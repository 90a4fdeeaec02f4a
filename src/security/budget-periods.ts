/** The periods a budget counts over (config `budgets`). */
export const budgetPeriods = ["hour", "day", "month"] as const;
export type BudgetPeriod = (typeof budgetPeriods)[number];

/** One period's bounds, in ms since the epoch: it holds the instants in [start, end). */
export interface PeriodBounds {
  readonly start: number;
  readonly end: number;
}

const hourMs = 3_600_000;
const dayMs = 86_400_000;

/** Wall-clock readers per time zone: one formatter each (making one costs far more than using it). */
const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (f === undefined) {
    f = new Intl.DateTimeFormat("en-US", {
      timeZone,
      hourCycle: "h23",
      year: "numeric",
      month: "numeric",
      day: "numeric",
      hour: "numeric",
      minute: "numeric",
      second: "numeric",
    });
    formatters.set(timeZone, f);
  }
  return f;
}

/** Whether `timeZone` is an IANA time zone this runtime knows (config validation). */
export function isTimeZone(timeZone: string): boolean {
  try {
    formatter(timeZone);
    return true;
  } catch {
    return false;
  }
}

interface Wall {
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
}

/** The wall clock of `timeZone` at instant `t` (whole seconds). */
function wallOf(t: number, timeZone: string): Wall {
  const w: Wall = { year: 0, month: 0, day: 0, hour: 0, minute: 0, second: 0 };
  for (const p of formatter(timeZone).formatToParts(t)) {
    if (p.type in w) w[p.type as keyof Wall] = Number(p.value);
  }
  return w;
}

/** A wall clock reading as a number: the UTC instant with the same fields (comparable, subtractable). */
function wallMs(t: number, timeZone: string): number {
  const w = wallOf(t, timeZone);
  return Date.UTC(w.year, w.month - 1, w.day, w.hour, w.minute, w.second);
}

/**
 * The instant the wall clock of `timeZone` reads `wall` (a wall reading as in wallMs): when it
 * reads it twice (a clock set back), the first such instant that `accept` takes; when it never
 * does (a clock set forward over it), the instant the clock jumps past it — a day that begins in
 * a gap (America/Santiago sets its clocks from 24:00 to 01:00) begins at 01:00.
 */
function instantOfWall(wall: number, timeZone: string, accept: (t: number) => boolean): number {
  // The offsets a day before and after: no zone changes its offset twice within two days.
  const before = wall - (wallMs(wall - dayMs, timeZone) - (wall - dayMs));
  const after = wall - (wallMs(wall + dayMs, timeZone) - (wall + dayMs));
  const exact = [before, after].filter((t) => wallMs(t, timeZone) === wall && accept(t)).sort((a, b) => a - b);
  if (exact.length > 0) return exact[0]!;
  // In a gap: the wall clock only rises between the two candidates; find, to the second, where
  // it first reaches `wall`.
  let lo = Math.min(before, after) / 1000;
  let hi = Math.max(before, after) / 1000;
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (wallMs(mid * 1000, timeZone) >= wall) hi = mid;
    else lo = mid;
  }
  return hi * 1000;
}

/**
 * The period of `period` that holds instant `t` in `timeZone`: a calendar month or day from its
 * local midnight to the next (a day is 23 or 25 hours long across a daylight-saving change), or
 * the 60 minutes from a local whole hour (in a zone whose offset is not whole hours, the hour
 * begins at :30 or :45 UTC).
 */
export function periodBounds(period: BudgetPeriod, t: number, timeZone: string): PeriodBounds {
  const s = Math.floor(t / 1000) * 1000;
  const w = wallOf(s, timeZone);
  if (period === "hour") {
    const start = s - (w.minute * 60 + w.second) * 1000;
    return { start, end: start + hourMs };
  }
  const [from, to] =
    period === "day"
      ? [Date.UTC(w.year, w.month - 1, w.day), Date.UTC(w.year, w.month - 1, w.day + 1)]
      : [Date.UTC(w.year, w.month - 1, 1), Date.UTC(w.year, w.month, 1)];
  return { start: instantOfWall(from, timeZone, (x) => x <= t), end: instantOfWall(to, timeZone, (x) => x > t) };
}

/**
 * The current period of each kind, computed again only when the clock has left it (the
 * formatter's work then, not per call).
 */
export class PeriodClock {
  private readonly current = new Map<BudgetPeriod, PeriodBounds>();

  constructor(
    readonly timeZone: string,
    readonly now: () => number = Date.now,
  ) {}

  /** The period of `period` holding now. */
  bounds(period: BudgetPeriod, t: number = this.now()): PeriodBounds {
    const c = this.current.get(period);
    if (c !== undefined && t >= c.start && t < c.end) return c;
    const b = periodBounds(period, t, this.timeZone);
    this.current.set(period, b);
    return b;
  }

  /** The period of `period` before the current one. */
  previous(period: BudgetPeriod, t: number = this.now()): PeriodBounds {
    return periodBounds(period, this.bounds(period, t).start - 1, this.timeZone);
  }
}

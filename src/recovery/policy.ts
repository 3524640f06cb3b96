/**
 * AzureIaasVM protection policies: validation (clear errors naming the member), the schedule as a cron pattern,
 * the next run, and retention math (when a recovery point taken at time t expires). Pure functions only.
 */
import { ArmError } from '../platform/http/errors.js';

export const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'] as const;
export const WEEKS = ['First', 'Second', 'Third', 'Fourth', 'Last'] as const;
export const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'] as const;
export type DurationType = 'Days' | 'Weeks' | 'Months' | 'Years';

export interface RetentionDuration {
  count: number;
  durationType: DurationType;
}
export interface DailyRetention {
  retentionTimes: string[];
  retentionDuration: RetentionDuration;
}
export interface WeeklyRetention {
  daysOfTheWeek: string[];
  retentionTimes: string[];
  retentionDuration: RetentionDuration;
}
export interface MonthlyRetention {
  retentionScheduleFormatType: 'Daily' | 'Weekly';
  retentionScheduleDaily?: { daysOfTheMonth: { date: number; isLast: boolean }[] } | undefined;
  retentionScheduleWeekly?: { daysOfTheWeek: string[]; weeksOfTheMonth: string[] } | undefined;
  retentionTimes: string[];
  retentionDuration: RetentionDuration;
}
export interface YearlyRetention extends MonthlyRetention {
  monthsOfYear: string[];
}

export interface IaasVmPolicy {
  backupManagementType: 'AzureIaasVM';
  schedulePolicy: {
    schedulePolicyType: 'SimpleSchedulePolicy';
    scheduleRunFrequency: 'Daily' | 'Weekly';
    scheduleRunDays?: string[] | undefined;
    scheduleRunTimes: string[];
    scheduleWeeklyFrequency?: number | undefined;
  };
  retentionPolicy: {
    retentionPolicyType: 'LongTermRetentionPolicy';
    dailySchedule?: DailyRetention | undefined;
    weeklySchedule?: WeeklyRetention | undefined;
    monthlySchedule?: MonthlyRetention | undefined;
    yearlySchedule?: YearlyRetention | undefined;
  };
  instantRpRetentionRangeInDays: number;
  timeZone: string;
  policyType: 'V1';
}

export const POLICY_ERROR = 'BMSUserErrorInvalidPolicyInput';

const bad = (target: string, message: string, recommendation?: string) =>
  new ArmError(400, POLICY_ERROR, `Invalid policy: ${target}: ${message}`, {
    target,
    recommendation: recommendation ?? 'Fix the named member of the policy and retry. Run times are UTC on :00 or :30; see `rsvault backup policy show -n DefaultPolicy` for a valid example.',
  });

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function canon<T extends string>(v: unknown, allowed: readonly T[], target: string): T {
  if (typeof v !== 'string') throw bad(target, `must be one of ${allowed.join(', ')}`);
  const hit = allowed.find((a) => a.toLowerCase() === v.toLowerCase());
  if (!hit) throw bad(target, `'${v}' is not one of ${allowed.join(', ')}`);
  return hit;
}

function list<T extends string>(v: unknown, allowed: readonly T[], target: string, nonEmpty = true): T[] {
  if (!Array.isArray(v)) throw bad(target, 'must be an array');
  if (nonEmpty && v.length === 0) throw bad(target, 'must not be empty');
  const out = v.map((x, i) => canon(x, allowed, `${target}[${i}]`));
  if (new Set(out).size !== out.length) throw bad(target, 'contains duplicates');
  return out;
}

/** Parses a run time ("2017-12-05T19:00:00Z", "19:30", …) into minutes after midnight UTC; :00 / :30 only. */
export function runTimeMinutes(v: unknown, target: string): number {
  if (typeof v !== 'string') throw bad(target, 'must be a date-time string such as 2024-01-01T19:00:00Z');
  const m = /^(?:\d{4}-\d{2}-\d{2}T)?(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]00:?00)?$/i.exec(v.trim());
  if (!m) throw bad(target, `'${v}' is not a valid UTC time; use e.g. 2024-01-01T19:00:00Z`);
  const h = Number(m[1]);
  const min = Number(m[2]);
  const sec = Number(m[3] ?? 0);
  const frac = Number(m[4] ?? 0);
  if (h > 23 || min > 59 || sec > 59) throw bad(target, `'${v}' is not a valid time of day`);
  if ((min !== 0 && min !== 30) || sec !== 0 || frac !== 0) {
    throw bad(target, `'${v}': backups can run only on the hour or the half hour (UTC), e.g. 19:00 or 19:30`, 'Pick a run time whose minutes are 00 or 30 and whose seconds are 0.');
  }
  return h * 60 + min;
}

export function formatRunTime(minutes: number, day = '2020-01-01'): string {
  const h = String(Math.floor(minutes / 60)).padStart(2, '0');
  const m = String(minutes % 60).padStart(2, '0');
  return `${day}T${h}:${m}:00Z`;
}

const LIMITS: Record<'daily' | 'weekly' | 'monthly' | 'yearly', { type: DurationType; min: number; max: number }> = {
  daily: { type: 'Days', min: 7, max: 9999 },
  weekly: { type: 'Weeks', min: 1, max: 5163 },
  monthly: { type: 'Months', min: 1, max: 1188 },
  yearly: { type: 'Years', min: 1, max: 99 },
};

function duration(v: unknown, kind: keyof typeof LIMITS, target: string): RetentionDuration {
  if (!isObj(v)) throw bad(target, 'is required: { count, durationType }');
  const lim = LIMITS[kind];
  const durationType = canon(v.durationType, ['Days', 'Weeks', 'Months', 'Years'] as const, `${target}.durationType`);
  if (durationType !== lim.type) throw bad(`${target}.durationType`, `must be '${lim.type}' for a ${kind} retention`);
  const count = v.count;
  if (typeof count !== 'number' || !Number.isInteger(count)) throw bad(`${target}.count`, 'must be an integer');
  if (count < lim.min || count > lim.max) throw bad(`${target}.count`, `${count} is out of range: a ${kind} retention keeps ${lim.min}–${lim.max} ${lim.type.toLowerCase()}`);
  return { count, durationType };
}

function retentionTimes(v: unknown, runMinutes: number, target: string): string[] {
  if (v === undefined) return [formatRunTime(runMinutes)];
  if (!Array.isArray(v) || v.length !== 1) throw bad(target, 'must hold exactly one time, the schedule run time');
  const m = runTimeMinutes(v[0], `${target}[0]`);
  if (m !== runMinutes) throw bad(`${target}[0]`, `must equal the schedule run time ${formatRunTime(runMinutes).slice(11, 16)} UTC`);
  return [formatRunTime(runMinutes)];
}

function monthlyLike(v: Record<string, unknown>, runMinutes: number, target: string, kind: 'monthly' | 'yearly', weekly: boolean, runDays: string[]): MonthlyRetention {
  const fmt = canon(v.retentionScheduleFormatType, ['Daily', 'Weekly'] as const, `${target}.retentionScheduleFormatType`);
  const out: MonthlyRetention = { retentionScheduleFormatType: fmt, retentionTimes: retentionTimes(v.retentionTimes, runMinutes, `${target}.retentionTimes`), retentionDuration: duration(v.retentionDuration, kind, `${target}.retentionDuration`) };
  if (fmt === 'Daily') {
    if (weekly) throw bad(`${target}.retentionScheduleFormatType`, "a weekly backup schedule needs the 'Weekly' format (days of the week)");
    const d = v.retentionScheduleDaily;
    if (!isObj(d) || !Array.isArray(d.daysOfTheMonth) || d.daysOfTheMonth.length === 0) throw bad(`${target}.retentionScheduleDaily.daysOfTheMonth`, 'must list at least one day');
    out.retentionScheduleDaily = {
      daysOfTheMonth: d.daysOfTheMonth.map((x, i) => {
        const t = `${target}.retentionScheduleDaily.daysOfTheMonth[${i}]`;
        if (!isObj(x)) throw bad(t, 'must be { date, isLast }');
        const isLast = x.isLast === true;
        const date = isLast ? 0 : x.date;
        if (!isLast && (typeof date !== 'number' || !Number.isInteger(date) || date < 1 || date > 28)) throw bad(`${t}.date`, 'must be 1–28, or set isLast: true');
        return { date: date as number, isLast };
      }),
    };
  } else {
    const w = v.retentionScheduleWeekly;
    if (!isObj(w)) throw bad(`${target}.retentionScheduleWeekly`, 'is required for the Weekly format');
    const days = list(w.daysOfTheWeek, DAYS, `${target}.retentionScheduleWeekly.daysOfTheWeek`);
    if (weekly) for (const d of days) if (!runDays.includes(d)) throw bad(`${target}.retentionScheduleWeekly.daysOfTheWeek`, `'${d}' is not a backup day of the schedule (${runDays.join(', ')})`);
    out.retentionScheduleWeekly = { daysOfTheWeek: days, weeksOfTheMonth: list(w.weeksOfTheMonth, WEEKS, `${target}.retentionScheduleWeekly.weeksOfTheMonth`) };
  }
  return out;
}

/** Validates and normalises the `properties` of an AzureIaasVM policy. Throws ArmError 400 naming the member. */
export function validatePolicy(input: unknown): IaasVmPolicy {
  if (!isObj(input)) throw bad('properties', 'is required');
  const bmt = input.backupManagementType;
  if (typeof bmt !== 'string' || bmt.toLowerCase() !== 'azureiaasvm') {
    throw bad('properties.backupManagementType', `'${String(bmt)}' is not supported: only 'AzureIaasVM' (Azure virtual machines) policies exist here`);
  }
  const sp = input.schedulePolicy;
  if (!isObj(sp)) throw bad('properties.schedulePolicy', 'is required');
  const spType = sp.schedulePolicyType;
  if (typeof spType !== 'string' || spType.toLowerCase() !== 'simpleschedulepolicy') throw bad('properties.schedulePolicy.schedulePolicyType', `'${String(spType)}' is not supported; use 'SimpleSchedulePolicy'`);
  const freq = sp.scheduleRunFrequency;
  if (typeof freq === 'string' && freq.toLowerCase() === 'hourly') throw bad('properties.schedulePolicy.scheduleRunFrequency', "'Hourly' needs an Enhanced (V2) policy, which is not supported; use 'Daily' or 'Weekly'");
  const frequency = canon(freq, ['Daily', 'Weekly'] as const, 'properties.schedulePolicy.scheduleRunFrequency');
  if (!Array.isArray(sp.scheduleRunTimes) || sp.scheduleRunTimes.length !== 1) throw bad('properties.schedulePolicy.scheduleRunTimes', 'must hold exactly one run time (UTC, :00 or :30)');
  const runMinutes = runTimeMinutes(sp.scheduleRunTimes[0], 'properties.schedulePolicy.scheduleRunTimes[0]');
  const weekly = frequency === 'Weekly';
  let runDays: string[] = [];
  if (weekly) runDays = list(sp.scheduleRunDays, DAYS, 'properties.schedulePolicy.scheduleRunDays');
  else if (Array.isArray(sp.scheduleRunDays) && sp.scheduleRunDays.length > 0) throw bad('properties.schedulePolicy.scheduleRunDays', 'must be empty for a Daily schedule');

  const rp = input.retentionPolicy;
  if (!isObj(rp)) throw bad('properties.retentionPolicy', 'is required');
  const rpType = rp.retentionPolicyType;
  if (typeof rpType !== 'string' || rpType.toLowerCase() !== 'longtermretentionpolicy') throw bad('properties.retentionPolicy.retentionPolicyType', `'${String(rpType)}' is not supported; use 'LongTermRetentionPolicy'`);
  const retention: IaasVmPolicy['retentionPolicy'] = { retentionPolicyType: 'LongTermRetentionPolicy' };
  const T = 'properties.retentionPolicy';
  if (isObj(rp.dailySchedule)) {
    if (weekly) throw bad(`${T}.dailySchedule`, 'a Weekly schedule cannot have a daily retention; use weeklySchedule');
    retention.dailySchedule = { retentionTimes: retentionTimes(rp.dailySchedule.retentionTimes, runMinutes, `${T}.dailySchedule.retentionTimes`), retentionDuration: duration(rp.dailySchedule.retentionDuration, 'daily', `${T}.dailySchedule.retentionDuration`) };
  } else if (!weekly) throw bad(`${T}.dailySchedule`, 'is required for a Daily schedule (how long each daily recovery point is kept)');
  if (isObj(rp.weeklySchedule)) {
    const days = list(rp.weeklySchedule.daysOfTheWeek, DAYS, `${T}.weeklySchedule.daysOfTheWeek`);
    if (weekly) for (const d of days) if (!runDays.includes(d)) throw bad(`${T}.weeklySchedule.daysOfTheWeek`, `'${d}' is not a backup day of the schedule (${runDays.join(', ')})`);
    retention.weeklySchedule = { daysOfTheWeek: days, retentionTimes: retentionTimes(rp.weeklySchedule.retentionTimes, runMinutes, `${T}.weeklySchedule.retentionTimes`), retentionDuration: duration(rp.weeklySchedule.retentionDuration, 'weekly', `${T}.weeklySchedule.retentionDuration`) };
  } else if (weekly) throw bad(`${T}.weeklySchedule`, 'is required for a Weekly schedule');
  if (isObj(rp.monthlySchedule)) retention.monthlySchedule = monthlyLike(rp.monthlySchedule, runMinutes, `${T}.monthlySchedule`, 'monthly', weekly, runDays);
  if (isObj(rp.yearlySchedule)) {
    const y = monthlyLike(rp.yearlySchedule, runMinutes, `${T}.yearlySchedule`, 'yearly', weekly, runDays);
    retention.yearlySchedule = { ...y, monthsOfYear: list(rp.yearlySchedule.monthsOfYear, MONTHS, `${T}.yearlySchedule.monthsOfYear`) };
  }

  let instant = input.instantRpRetentionRangeInDays;
  if (instant === undefined || instant === null) instant = weekly ? 5 : 2;
  if (typeof instant !== 'number' || !Number.isInteger(instant)) throw bad('properties.instantRpRetentionRangeInDays', 'must be an integer');
  if (weekly && instant !== 5) throw bad('properties.instantRpRetentionRangeInDays', 'is fixed at 5 days for a Weekly schedule');
  if (!weekly && (instant < 1 || instant > 5)) throw bad('properties.instantRpRetentionRangeInDays', `${instant} is out of range: 1–5 days`);

  const tz = input.timeZone ?? 'UTC';
  if (typeof tz !== 'string' || !['utc', 'coordinated universal time', 'etc/utc'].includes(tz.toLowerCase())) {
    throw bad('properties.timeZone', `'${String(tz)}' is not supported: schedules run in UTC`, "Omit timeZone or set it to 'UTC', and give run times in UTC.");
  }
  const pt = input.policyType;
  if (pt !== undefined && pt !== null && String(pt).toUpperCase() !== 'V1' && String(pt) !== 'Invalid') throw bad('properties.policyType', `'${String(pt)}' is not supported; only V1 (standard) policies`);

  return {
    backupManagementType: 'AzureIaasVM',
    schedulePolicy: {
      schedulePolicyType: 'SimpleSchedulePolicy',
      scheduleRunFrequency: frequency,
      ...(weekly ? { scheduleRunDays: runDays } : {}),
      scheduleRunTimes: [formatRunTime(runMinutes)],
      scheduleWeeklyFrequency: 0,
    },
    retentionPolicy: retention,
    instantRpRetentionRangeInDays: instant,
    timeZone: 'UTC',
    policyType: 'V1',
  };
}

/** DefaultPolicy: daily at the given half-hour slot, 30 days of daily retention, 2 days of instant restore. */
export function defaultPolicy(runMinutes = 19 * 60): IaasVmPolicy {
  return validatePolicy({
    backupManagementType: 'AzureIaasVM',
    schedulePolicy: { schedulePolicyType: 'SimpleSchedulePolicy', scheduleRunFrequency: 'Daily', scheduleRunTimes: [formatRunTime(runMinutes)] },
    retentionPolicy: { retentionPolicyType: 'LongTermRetentionPolicy', dailySchedule: { retentionDuration: { count: 30, durationType: 'Days' } } },
    instantRpRetentionRangeInDays: 2,
    timeZone: 'UTC',
  });
}

/** The policy's schedule as a croner pattern (seconds minutes hours dom month dow), UTC. */
export function scheduleCron(p: IaasVmPolicy): string {
  const m = runTimeMinutes(p.schedulePolicy.scheduleRunTimes[0], 'scheduleRunTimes[0]');
  const dow = p.schedulePolicy.scheduleRunFrequency === 'Weekly' ? (p.schedulePolicy.scheduleRunDays ?? []).map((d) => DAYS.indexOf(d as (typeof DAYS)[number])).sort().join(',') : '*';
  return `0 ${m % 60} ${Math.floor(m / 60)} * * ${dow}`;
}

/** The first scheduled run strictly after `from` (epoch ms). Pure, no cron library needed. */
export function nextScheduledRun(p: IaasVmPolicy, from: number): number {
  const m = runTimeMinutes(p.schedulePolicy.scheduleRunTimes[0], 'scheduleRunTimes[0]');
  const days = p.schedulePolicy.scheduleRunFrequency === 'Weekly' ? new Set((p.schedulePolicy.scheduleRunDays ?? []).map((d) => DAYS.indexOf(d as (typeof DAYS)[number]))) : undefined;
  const d0 = new Date(from);
  const base = Date.UTC(d0.getUTCFullYear(), d0.getUTCMonth(), d0.getUTCDate());
  for (let i = 0; i < 8; i++) {
    const t = base + i * 86_400_000 + m * 60_000;
    if (t <= from) continue;
    if (days && !days.has(new Date(t).getUTCDay())) continue;
    return t;
  }
  throw new Error('unreachable: a schedule has at least one run day');
}

export function addDuration(t: number, d: RetentionDuration): number {
  const x = new Date(t);
  switch (d.durationType) {
    case 'Days':
      return t + d.count * 86_400_000;
    case 'Weeks':
      return t + d.count * 7 * 86_400_000;
    case 'Months':
      x.setUTCMonth(x.getUTCMonth() + d.count);
      return x.getTime();
    case 'Years':
      x.setUTCFullYear(x.getUTCFullYear() + d.count);
      return x.getTime();
  }
}

function lastDayOfMonth(d: Date): number {
  return new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 0)).getUTCDate();
}

function matchesMonthly(m: MonthlyRetention, d: Date): boolean {
  if (m.retentionScheduleFormatType === 'Daily') {
    const dom = d.getUTCDate();
    return (m.retentionScheduleDaily?.daysOfTheMonth ?? []).some((x) => (x.isLast ? dom === lastDayOfMonth(d) : dom === x.date));
  }
  const w = m.retentionScheduleWeekly;
  if (!w || !w.daysOfTheWeek.includes(DAYS[d.getUTCDay()]!)) return false;
  const dom = d.getUTCDate();
  const week = WEEKS[Math.floor((dom - 1) / 7)]!;
  const isLast = dom + 7 > lastDayOfMonth(d);
  return w.weeksOfTheMonth.some((x) => x === week || (x === 'Last' && isLast));
}

/**
 * When a scheduled recovery point taken at `t` expires: the longest of the retentions whose rule matches t
 * (daily always; weekly on its days; monthly/yearly on their days). Returns the expiry and the rule that set it.
 */
export function scheduledExpiry(p: IaasVmPolicy, t: number): { expiry: number; rule: 'Daily' | 'Weekly' | 'Monthly' | 'Yearly' } {
  const d = new Date(t);
  const r = p.retentionPolicy;
  const cands: { expiry: number; rule: 'Daily' | 'Weekly' | 'Monthly' | 'Yearly' }[] = [];
  if (r.dailySchedule) cands.push({ expiry: addDuration(t, r.dailySchedule.retentionDuration), rule: 'Daily' });
  if (r.weeklySchedule && r.weeklySchedule.daysOfTheWeek.includes(DAYS[d.getUTCDay()]!)) cands.push({ expiry: addDuration(t, r.weeklySchedule.retentionDuration), rule: 'Weekly' });
  if (r.monthlySchedule && matchesMonthly(r.monthlySchedule, d)) cands.push({ expiry: addDuration(t, r.monthlySchedule.retentionDuration), rule: 'Monthly' });
  if (r.yearlySchedule && r.yearlySchedule.monthsOfYear.includes(MONTHS[d.getUTCMonth()]!) && matchesMonthly(r.yearlySchedule, d)) cands.push({ expiry: addDuration(t, r.yearlySchedule.retentionDuration), rule: 'Yearly' });
  if (cands.length === 0) {
    // A weekly schedule on a day its retention does not list cannot happen after validation; keep a week to be safe.
    return { expiry: t + 7 * 86_400_000, rule: 'Weekly' };
  }
  return cands.reduce((a, b) => (b.expiry > a.expiry ? b : a));
}

/** Recovery points past their expiry at `now` (pure: the retention job prunes these). */
export function expiredPoints<T extends { expiry: number }>(points: T[], now: number): T[] {
  return points.filter((p) => p.expiry <= now);
}

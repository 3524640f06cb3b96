import { describe, it, expect } from 'vitest';
import { ArmError } from '../platform/http/errors.js';
import { defaultPolicy, expiredPoints, nextScheduledRun, scheduleCron, scheduledExpiry, validatePolicy, addDuration } from './policy.js';
import { slotsBetween } from '../platform/jobs/index.js';

const daily = (over: Record<string, unknown> = {}) => ({
  backupManagementType: 'AzureIaasVM',
  schedulePolicy: { schedulePolicyType: 'SimpleSchedulePolicy', scheduleRunFrequency: 'Daily', scheduleRunTimes: ['2024-01-01T19:30:00Z'] },
  retentionPolicy: { retentionPolicyType: 'LongTermRetentionPolicy', dailySchedule: { retentionTimes: ['2024-01-01T19:30:00Z'], retentionDuration: { count: 30, durationType: 'Days' } } },
  instantRpRetentionRangeInDays: 2,
  timeZone: 'UTC',
  ...over,
});
const weekly = () => ({
  backupManagementType: 'AzureIaasVM',
  schedulePolicy: { schedulePolicyType: 'SimpleSchedulePolicy', scheduleRunFrequency: 'Weekly', scheduleRunDays: ['Sunday', 'Wednesday'], scheduleRunTimes: ['2024-01-01T02:00:00Z'] },
  retentionPolicy: {
    retentionPolicyType: 'LongTermRetentionPolicy',
    weeklySchedule: { daysOfTheWeek: ['Sunday'], retentionTimes: ['2024-01-01T02:00:00Z'], retentionDuration: { count: 12, durationType: 'Weeks' } },
    monthlySchedule: { retentionScheduleFormatType: 'Weekly', retentionScheduleWeekly: { daysOfTheWeek: ['Sunday'], weeksOfTheMonth: ['First'] }, retentionTimes: ['2024-01-01T02:00:00Z'], retentionDuration: { count: 6, durationType: 'Months' } },
    yearlySchedule: { retentionScheduleFormatType: 'Weekly', monthsOfYear: ['January'], retentionScheduleWeekly: { daysOfTheWeek: ['Sunday'], weeksOfTheMonth: ['First'] }, retentionTimes: ['2024-01-01T02:00:00Z'], retentionDuration: { count: 3, durationType: 'Years' } },
  },
  instantRpRetentionRangeInDays: 5,
});

function err(f: () => unknown): ArmError {
  try {
    f();
  } catch (e) {
    if (e instanceof ArmError) return e;
    throw e;
  }
  throw new Error('expected an ArmError');
}

describe('validatePolicy', () => {
  it('accepts a daily and a weekly policy and normalises them', () => {
    const d = validatePolicy(daily());
    expect(d.schedulePolicy).toEqual({ schedulePolicyType: 'SimpleSchedulePolicy', scheduleRunFrequency: 'Daily', scheduleRunTimes: ['2020-01-01T19:30:00Z'], scheduleWeeklyFrequency: 0 });
    expect(d.retentionPolicy.dailySchedule?.retentionDuration).toEqual({ count: 30, durationType: 'Days' });
    const w = validatePolicy(weekly());
    expect(w.schedulePolicy.scheduleRunDays).toEqual(['Sunday', 'Wednesday']);
    expect(w.instantRpRetentionRangeInDays).toBe(5);
  });

  it('DefaultPolicy is daily with 30 days of retention', () => {
    const p = defaultPolicy();
    expect(p.schedulePolicy.scheduleRunFrequency).toBe('Daily');
    expect(p.retentionPolicy.dailySchedule!.retentionDuration).toEqual({ count: 30, durationType: 'Days' });
    expect(p.instantRpRetentionRangeInDays).toBe(2);
  });

  it.each([
    [daily({ schedulePolicy: { schedulePolicyType: 'SimpleSchedulePolicy', scheduleRunFrequency: 'Daily', scheduleRunTimes: ['2024-01-01T19:15:00Z'] } }), 'properties.schedulePolicy.scheduleRunTimes[0]', /hour or the half hour/],
    [daily({ schedulePolicy: { schedulePolicyType: 'SimpleSchedulePolicy', scheduleRunFrequency: 'Hourly', scheduleRunTimes: ['2024-01-01T19:00:00Z'] } }), 'properties.schedulePolicy.scheduleRunFrequency', /Hourly/],
    [daily({ schedulePolicy: { schedulePolicyType: 'SimpleSchedulePolicy', scheduleRunFrequency: 'Daily', scheduleRunTimes: [] } }), 'properties.schedulePolicy.scheduleRunTimes', /exactly one/],
    [daily({ retentionPolicy: { retentionPolicyType: 'LongTermRetentionPolicy', dailySchedule: { retentionDuration: { count: 3, durationType: 'Days' } } } }), 'properties.retentionPolicy.dailySchedule.retentionDuration.count', /7–9999/],
    [daily({ retentionPolicy: { retentionPolicyType: 'LongTermRetentionPolicy' } }), 'properties.retentionPolicy.dailySchedule', /required/],
    [daily({ retentionPolicy: { retentionPolicyType: 'LongTermRetentionPolicy', dailySchedule: { retentionTimes: ['2024-01-01T20:00:00Z'], retentionDuration: { count: 30, durationType: 'Days' } } } }), 'properties.retentionPolicy.dailySchedule.retentionTimes[0]', /must equal the schedule run time/],
    [daily({ instantRpRetentionRangeInDays: 9 }), 'properties.instantRpRetentionRangeInDays', /1–5/],
    [daily({ timeZone: 'Pacific Standard Time' }), 'properties.timeZone', /UTC/],
    [daily({ backupManagementType: 'AzureSql' }), 'properties.backupManagementType', /AzureIaasVM/],
    [{ ...weekly(), instantRpRetentionRangeInDays: 2 }, 'properties.instantRpRetentionRangeInDays', /fixed at 5/],
  ])('rejects bad input with a clear error (%#)', (input, target, msg) => {
    const e = err(() => validatePolicy(input));
    expect(e.status).toBe(400);
    expect(e.code).toBe('BMSUserErrorInvalidPolicyInput');
    expect(e.target).toBe(target);
    expect(e.message).toMatch(msg);
  });

  it('weekly retention days must be backup days', () => {
    const w = weekly();
    w.retentionPolicy.weeklySchedule.daysOfTheWeek = ['Monday'];
    expect(err(() => validatePolicy(w)).message).toMatch(/'Monday' is not a backup day/);
  });
});

describe('schedule math', () => {
  it('turns a policy into a cron pattern that croner agrees with', () => {
    const d = validatePolicy(daily());
    expect(scheduleCron(d)).toBe('0 30 19 * * *');
    const w = validatePolicy(weekly());
    expect(scheduleCron(w)).toBe('0 0 2 * * 0,3');
    const from = Date.parse('2026-03-04T03:00:00Z'); // a Wednesday, after the 02:00 run
    expect(new Date(nextScheduledRun(w, from)).toISOString()).toBe('2026-03-08T02:00:00.000Z'); // Sunday
    expect(slotsBetween(scheduleCron(w), from, from + 7 * 86_400_000).map((t) => new Date(t).toISOString())).toEqual(['2026-03-08T02:00:00.000Z', '2026-03-11T02:00:00.000Z']);
    expect(new Date(nextScheduledRun(d, Date.parse('2026-03-04T19:30:00Z'))).toISOString()).toBe('2026-03-05T19:30:00.000Z');
    expect(new Date(nextScheduledRun(d, Date.parse('2026-03-04T19:29:59Z'))).toISOString()).toBe('2026-03-04T19:30:00.000Z');
  });
});

describe('retention math', () => {
  it('daily points keep for their days', () => {
    const t = Date.parse('2026-03-04T19:30:00Z');
    expect(scheduledExpiry(validatePolicy(daily()), t)).toEqual({ expiry: t + 30 * 86_400_000, rule: 'Daily' });
  });
  it('the longest matching rule wins (weekly < monthly < yearly)', () => {
    const w = validatePolicy(weekly());
    const wed = Date.parse('2026-03-11T02:00:00Z'); // Wednesday: a backup day, but no retention rule lists it
    expect(scheduledExpiry(w, wed).rule).toBe('Weekly');
    const sunMid = Date.parse('2026-03-15T02:00:00Z'); // third Sunday of March: weekly only
    expect(scheduledExpiry(w, sunMid)).toEqual({ expiry: sunMid + 12 * 7 * 86_400_000, rule: 'Weekly' });
    const firstSunMarch = Date.parse('2026-03-01T02:00:00Z'); // first Sunday: monthly
    expect(scheduledExpiry(w, firstSunMarch)).toEqual({ expiry: Date.parse('2026-09-01T02:00:00Z'), rule: 'Monthly' });
    const firstSunJan = Date.parse('2026-01-04T02:00:00Z'); // first Sunday of January: yearly
    expect(scheduledExpiry(w, firstSunJan)).toEqual({ expiry: Date.parse('2029-01-04T02:00:00Z'), rule: 'Yearly' });
  });
  it('monthly "last day" and month arithmetic', () => {
    const p = validatePolicy(
      daily({
        retentionPolicy: {
          retentionPolicyType: 'LongTermRetentionPolicy',
          dailySchedule: { retentionDuration: { count: 7, durationType: 'Days' } },
          monthlySchedule: { retentionScheduleFormatType: 'Daily', retentionScheduleDaily: { daysOfTheMonth: [{ date: 0, isLast: true }] }, retentionDuration: { count: 1, durationType: 'Months' } },
        },
      }),
    );
    const lastFeb = Date.parse('2026-02-28T19:30:00Z');
    expect(scheduledExpiry(p, lastFeb)).toEqual({ expiry: Date.parse('2026-03-28T19:30:00Z'), rule: 'Monthly' });
    expect(scheduledExpiry(p, Date.parse('2026-02-27T19:30:00Z')).rule).toBe('Daily');
    expect(addDuration(Date.parse('2026-01-31T00:00:00Z'), { count: 1, durationType: 'Years' })).toBe(Date.parse('2027-01-31T00:00:00Z'));
  });
  it('expired points are those at or past their expiry', () => {
    expect(expiredPoints([{ id: 'a', expiry: 10 }, { id: 'b', expiry: 20 }], 15).map((p) => p.id)).toEqual(['a']);
  });
});

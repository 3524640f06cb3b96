import { describe, expect, it } from 'vitest';
import { FailureThrottle } from './throttle.js';
import { parseByteRange } from './range.js';

describe('FailureThrottle', () => {
  it('locks a key out after the limit until its window ends', () => {
    let now = 1_000_000;
    const t = new FailureThrottle(3, 60_000, () => now);
    for (let i = 0; i < 2; i++) t.fail(['c1']);
    expect(t.retryAfter(['c1'])).toBe(0);
    t.fail(['c1']);
    expect(t.retryAfter(['c1', 'c2'])).toBe(60);
    expect(t.retryAfter(['c2'])).toBe(0);
    now += 59_500;
    expect(t.retryAfter(['c1'])).toBe(1);
    now += 600;
    expect(t.retryAfter(['c1'])).toBe(0);
  });
});

describe('parseByteRange', () => {
  it('serves START- and START-END (END capped), refuses the rest', () => {
    expect(parseByteRange(undefined, 100)).toBeUndefined();
    expect(parseByteRange('bytes=0-', 100)).toEqual({ start: 0, end: 99 });
    expect(parseByteRange('bytes=10-19', 100)).toEqual({ start: 10, end: 19 });
    expect(parseByteRange('bytes=90-500', 100)).toEqual({ start: 90, end: 99 });
    for (const bad of ['bytes=50-10', 'bytes=100-', 'bytes=0-99999999999999999999', 'bytes=99999999999999999999-', 'bytes=-5', 'items=0-1', 'bytes=0-1,3-4']) {
      expect(parseByteRange(bad, 100), bad).toBe('unsatisfiable');
    }
    expect(parseByteRange('bytes=0-', 0)).toBe('unsatisfiable');
  });
});

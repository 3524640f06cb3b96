import { describe, expect, it } from 'vitest';
import { hashSecret, newClientSecret, verifySecret } from './crypto.js';

describe('client secrets', () => {
  it('are 40 URL-safe characters and never start with "-" (az login -p would take it for an option)', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 5000; i++) {
      const s = newClientSecret();
      expect(s).toMatch(/^[A-Za-z0-9_][A-Za-z0-9_-]{39}$/);
      seen.add(s);
    }
    expect(seen.size).toBe(5000);
  });

  it('verify against their scrypt hash, and nothing else does', async () => {
    const s = newClientSecret();
    const h = await hashSecret(s);
    expect(h).not.toContain(s);
    expect(await verifySecret(s, h)).toBe(true);
    expect(await verifySecret(`${s}x`, h)).toBe(false);
  });
});

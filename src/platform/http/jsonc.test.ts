import { describe, it, expect } from 'vitest';
import { parseJsonLenient } from './jsonc.js';

describe('JSONC as ARM accepts it', () => {
  it('comments, trailing commas and unquoted keys; strings are left alone', () => {
    const t = '{"properties": {"mode": "Incremental",}, template: { // c\n "u": "https://x/y // z", /* b, */ "a": [1, 2, ], "e": "q\\" // q",\n}, }';
    expect(parseJsonLenient(t)).toEqual({ properties: { mode: 'Incremental' }, template: { u: 'https://x/y // z', a: [1, 2], e: 'q" // q' } });
  });
  it('strict JSON is parsed as is; broken input throws the strict parser\'s error', () => {
    expect(parseJsonLenient('{"a":[true,null]}')).toEqual({ a: [true, null] });
    expect(() => parseJsonLenient('{"a": /* open')).toThrow(SyntaxError);
    expect(() => parseJsonLenient('{"a": }')).toThrow(/JSON/);
    expect(() => parseJsonLenient('[1,,2]')).toThrow(SyntaxError);
  });
});

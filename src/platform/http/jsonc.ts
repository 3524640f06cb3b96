/**
 * JSON with the relaxations ARM's deserializer accepts (Newtonsoft JSON.NET): `//` and `/* *\/` comments, trailing
 * commas before `}` / `]`, and unquoted identifier property names (az sends `{"properties": {...}, template: {...}}`
 * so that a template's comments reach the service). One pass over the text that respects string literals (escapes
 * included) and rewrites it to strict JSON for JSON.parse, which then reports any remaining error with its position.
 */

/** Rewrites JSONC to strict JSON (throws SyntaxError for an unterminated comment or string). */
export function jsoncToJson(text: string): string {
  let out = '';
  let i = 0;
  const n = text.length;
  /** Index in `out` of a comma that may turn out to be trailing (only whitespace/comments since). */
  let pendingComma = -1;
  /** Whether the previous significant character opened an object or followed a comma inside one (a key may come). */
  const stack: ('{' | '[')[] = [];
  let expectKey = false;
  while (i < n) {
    const c = text[i]!;
    if (c === '"') {
      let j = i + 1;
      while (j < n && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (j >= n) throw new SyntaxError(`Unterminated string in JSON at position ${i}`);
      out += text.slice(i, j + 1);
      i = j + 1;
      pendingComma = -1;
      expectKey = false;
      continue;
    }
    if (c === '/' && text[i + 1] === '/') {
      while (i < n && text[i] !== '\n' && text[i] !== '\r') i++;
      continue;
    }
    if (c === '/' && text[i + 1] === '*') {
      const end = text.indexOf('*/', i + 2);
      if (end < 0) throw new SyntaxError(`Unterminated comment in JSON at position ${i}`);
      out += ' ';
      i = end + 2;
      continue;
    }
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r') {
      out += c;
      i++;
      continue;
    }
    if ((c === '}' || c === ']') && pendingComma >= 0) {
      out = out.slice(0, pendingComma) + ' ' + out.slice(pendingComma + 1);
    }
    pendingComma = -1;
    if (c === '{' || c === '[') {
      stack.push(c);
      expectKey = c === '{';
      out += c;
      i++;
      continue;
    }
    if (c === '}' || c === ']') {
      stack.pop();
      expectKey = false;
      out += c;
      i++;
      continue;
    }
    if (c === ',') {
      pendingComma = out.length;
      expectKey = stack[stack.length - 1] === '{';
      out += c;
      i++;
      continue;
    }
    if (expectKey && /[A-Za-z_$]/.test(c)) {
      const m = /^[A-Za-z_$][\w$]*/.exec(text.slice(i, i + 256))!;
      out += JSON.stringify(m[0]);
      i += m[0].length;
      expectKey = false;
      continue;
    }
    expectKey = false;
    out += c;
    i++;
  }
  return out;
}

/** JSON.parse, falling back to the JSONC relaxations; a document that is invalid either way throws the strict error. */
export function parseJsonLenient(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (strict) {
    let relaxed: string;
    try {
      relaxed = jsoncToJson(text);
    } catch {
      throw strict;
    }
    try {
      return JSON.parse(relaxed) as unknown;
    } catch {
      throw strict;
    }
  }
}

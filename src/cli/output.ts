/** Output formats shared by every command: -o json (default), table, tsv — az's shapes. */
export type OutputFormat = 'json' | 'jsonc' | 'table' | 'tsv' | 'none';

function flatten(v: unknown): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return { value: v };
  const out: Record<string, unknown> = {};
  for (const [k, val] of Object.entries(v as Record<string, unknown>)) {
    if (val !== null && typeof val === 'object' && !Array.isArray(val) && k === 'properties') {
      for (const [k2, v2] of Object.entries(val as Record<string, unknown>)) if (v2 === null || typeof v2 !== 'object') out[k2] = v2;
    } else if (val === null || typeof val !== 'object') out[k] = val;
  }
  return out;
}

const cell = (v: unknown): string => (v === undefined || v === null ? '' : String(v));

export function render(data: unknown, format: OutputFormat): string {
  if (format === 'none' || data === undefined) return '';
  if (format === 'json' || format === 'jsonc') return JSON.stringify(data, null, 2) + '\n';
  const rows = (Array.isArray(data) ? data : [data]).map(flatten);
  if (rows.length === 0) return '';
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  if (format === 'tsv') return rows.map((r) => cols.map((c) => cell(r[c])).join('\t')).join('\n') + '\n';
  const head = cols.map((c) => c.charAt(0).toUpperCase() + c.slice(1));
  const widths = cols.map((c, i) => Math.max(head[i]!.length, ...rows.map((r) => cell(r[c]).length)));
  const line = (vals: string[]) => vals.map((v, i) => v.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map((r) => line(cols.map((c) => cell(r[c]))))].join('\n') + '\n';
}

/**
 * HTTP byte ranges (`Range` / `x-ms-range`) for blob-style downloads: `bytes=START-` and `bytes=START-END`, END capped
 * at the last byte, as Azure Storage does. Anything that cannot be served — START beyond the end, END before START,
 * numbers beyond 2^53, other forms — is unsatisfiable: 416 with `Content-Range: bytes * /size` (never a 500).
 */
export type ByteRange = { start: number; end: number };

/** undefined = no range asked (serve it all); 'unsatisfiable' = answer 416. */
export function parseByteRange(header: string | string[] | undefined, size: number): ByteRange | 'unsatisfiable' | undefined {
  if (header === undefined) return undefined;
  if (Array.isArray(header) || size <= 0) return 'unsatisfiable';
  const m = /^bytes=(\d{1,16})-(\d{0,16})$/.exec(header.trim());
  if (!m) return 'unsatisfiable';
  const start = Number(m[1]);
  const end = m[2] ? Math.min(size - 1, Number(m[2])) : size - 1;
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start >= size || end < start) return 'unsatisfiable';
  return { start, end };
}

export const unsatisfiableRange = (size: number, range: string | string[]) => ({
  status: 416,
  headers: { 'content-range': `bytes */${size}` },
  body: { error: { code: 'InvalidRange', message: `The range specified is invalid for the current size of the resource: '${String(range)}' for ${size} bytes.` } },
});

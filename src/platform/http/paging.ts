/** nextLink paging for ARM lists: an opaque `$skiptoken` (offset) on the same URL. */
export interface Page<T> {
  value: T[];
  nextLink?: string;
}

export const DEFAULT_PAGE_SIZE = 100;

export function paginate<T>(items: T[], requestUrl: URL, pageSize = DEFAULT_PAGE_SIZE, tokenParam = '$skiptoken'): Page<T> {
  const raw = requestUrl.searchParams.get(tokenParam);
  const offset = raw && /^\d+$/.test(raw) ? Number(raw) : 0;
  const value = items.slice(offset, offset + pageSize);
  if (offset + pageSize >= items.length) return { value };
  const next = new URL(requestUrl.href);
  next.searchParams.set(tokenParam, String(offset + pageSize));
  return { value, nextLink: next.href };
}

/** Shared building blocks: blade frame, error box (message + recommendation), progress, paged table, form fields. */
import { useCallback, useEffect, useId, useRef, useState, type ReactNode } from 'react';
import { ApiError, errorOf, parseId } from './api';
import { Link, navigate, resourcePath } from './router';

export interface Crumb {
  label: string;
  to: string;
}

/** A blade: breadcrumb, title (the page's h1), optional subtitle, a command bar and the content. */
export function Blade(props: { title: string; subtitle?: string | undefined; crumbs?: Crumb[]; commands?: ReactNode; children: ReactNode; wide?: boolean }) {
  const h = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    document.title = `${props.title} - rsvault`;
  }, [props.title]);
  return (
    <section className={`blade${props.wide ? ' wide' : ''}`} aria-labelledby="blade-title">
      {props.crumbs && props.crumbs.length > 0 && (
        <nav aria-label="Breadcrumb" className="crumbs">
          {props.crumbs.map((c) => (
            <span key={c.to}>
              <Link to={c.to}>{c.label}</Link>
              <span aria-hidden="true"> &rsaquo; </span>
            </span>
          ))}
        </nav>
      )}
      <h1 id="blade-title" ref={h} tabIndex={-1}>
        {props.title}
      </h1>
      {props.subtitle && <p className="subtitle">{props.subtitle}</p>}
      {props.commands && (
        <div role="toolbar" aria-label="Commands" className="commands">
          {props.commands}
        </div>
      )}
      <div className="blade-body">{props.children}</div>
    </section>
  );
}

/** An API error shown where it happened: code, message and the server's recommendation. */
export function ErrorBox(props: { error: unknown; id?: string; title?: string }) {
  if (!props.error) return null;
  const e = errorOf(props.error);
  return (
    <div className="error" role="alert" id={props.id}>
      <strong>{props.title ?? 'Error'}</strong>
      <span className="code"> ({e.code})</span>
      <p className="message">{e.message}</p>
      {e.recommendation && (
        <p className="recommendation">
          <strong>Recommendation: </strong>
          {e.recommendation}
        </p>
      )}
    </div>
  );
}

export function Notice(props: { kind?: 'info' | 'warning' | 'success'; children: ReactNode; role?: string }) {
  return (
    <div className={`notice ${props.kind ?? 'info'}`} role={props.role ?? (props.kind === 'success' ? 'status' : undefined)}>
      {props.children}
    </div>
  );
}

export function Progress(props: { label: string; value?: number | undefined }) {
  const v = props.value;
  return (
    <div className="progress">
      <div
        role="progressbar"
        aria-label={props.label}
        aria-valuemin={0}
        aria-valuemax={100}
        {...(v === undefined ? {} : { 'aria-valuenow': Math.round(v) })}
        className={v === undefined ? 'bar indeterminate' : 'bar'}
      >
        <div className="fill" style={v === undefined ? undefined : { width: `${Math.max(0, Math.min(100, v))}%` }} />
      </div>
      <span className="progress-label">
        {props.label}
        {v !== undefined ? ` ${Math.round(v)}%` : ''}
      </span>
    </div>
  );
}

export function Spinner(props: { label?: string }) {
  return (
    <p className="loading" role="status">
      {props.label ?? 'Loading…'}
    </p>
  );
}

/** Runs an async loader; re-runs when deps change or reload() is called. */
export function useAsync<T>(fn: () => Promise<T>, deps: unknown[]): { data?: T | undefined; error?: ApiError | undefined; loading: boolean; reload: () => void } {
  const [state, setState] = useState<{ data?: T | undefined; error?: ApiError | undefined; loading: boolean }>({ loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    setState((s) => ({ ...s, loading: true }));
    fn().then(
      (data) => live && setState({ data, loading: false }),
      (e: unknown) => live && setState({ error: errorOf(e), loading: false }),
    );
    return () => {
      live = false;
    };
  }, [...deps, tick]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { ...state, reload };
}

/** Re-runs `fn` every `ms` while `active`. */
export function useInterval(fn: () => void, ms: number, active: boolean): void {
  const ref = useRef(fn);
  ref.current = fn;
  useEffect(() => {
    if (!active) return;
    const t = setInterval(() => ref.current(), ms);
    return () => clearInterval(t);
  }, [ms, active]);
}

export interface Column<T> {
  header: string;
  cell: (row: T) => ReactNode;
  className?: string;
}

/**
 * A table with client-side paging (the lists come whole or via nextLink; the server pages too). `label` names the
 * table for assistive technology and tests.
 */
export function DataTable<T>(props: {
  label: string;
  columns: Column<T>[];
  rows: T[];
  rowKey: (row: T) => string;
  empty?: ReactNode;
  pageSize?: number;
  selectable?: { selected: Set<string>; onToggle: (key: string, on: boolean) => void; rowLabel: (row: T) => string; disabled?: (row: T) => boolean };
  moreOnServer?: { onLoadMore: () => void; loading: boolean } | undefined;
}) {
  const size = props.pageSize ?? 10;
  const [page, setPage] = useState(0);
  const pages = Math.max(1, Math.ceil(props.rows.length / size));
  const cur = Math.min(page, pages - 1);
  const rows = props.rows.slice(cur * size, cur * size + size);
  const sel = props.selectable;
  return (
    <div className="table-wrap">
      <table aria-label={props.label}>
        <thead>
          <tr>
            {sel && (
              <th scope="col" className="check">
                <span className="visually-hidden">Select</span>
              </th>
            )}
            {props.columns.map((c) => (
              <th scope="col" key={c.header} className={c.className}>
                {c.header}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.length === 0 && (
            <tr>
              <td colSpan={props.columns.length + (sel ? 1 : 0)} className="empty">
                {props.empty ?? 'No items.'}
              </td>
            </tr>
          )}
          {rows.map((r) => {
            const k = props.rowKey(r);
            return (
              <tr key={k}>
                {sel && (
                  <td className="check">
                    <input
                      type="checkbox"
                      aria-label={sel.rowLabel(r)}
                      checked={sel.selected.has(k)}
                      disabled={sel.disabled?.(r) ?? false}
                      onChange={(e) => sel.onToggle(k, e.target.checked)}
                    />
                  </td>
                )}
                {props.columns.map((c) => (
                  <td key={c.header} className={c.className} data-label={c.header}>
                    {c.cell(r)}
                  </td>
                ))}
              </tr>
            );
          })}
        </tbody>
      </table>
      {(pages > 1 || props.moreOnServer) && (
        <nav className="pager" aria-label={`${props.label} pages`}>
          <button type="button" onClick={() => setPage(cur - 1)} disabled={cur === 0}>
            Previous
          </button>
          <span>
            Page {cur + 1} of {pages}
          </span>
          <button type="button" onClick={() => setPage(cur + 1)} disabled={cur >= pages - 1}>
            Next
          </button>
          {props.moreOnServer && (
            <button type="button" onClick={props.moreOnServer.onLoadMore} disabled={props.moreOnServer.loading}>
              Load more
            </button>
          )}
        </nav>
      )}
    </div>
  );
}

export function Field(props: { label: string; children: (id: string, describedBy?: string) => ReactNode; hint?: string; error?: string | undefined }) {
  const id = useId();
  const hintId = props.hint ? `${id}-hint` : undefined;
  const errId = props.error ? `${id}-err` : undefined;
  const describedBy = [hintId, errId].filter(Boolean).join(' ') || undefined;
  return (
    <div className={`field${props.error ? ' invalid' : ''}`}>
      <label htmlFor={id}>{props.label}</label>
      {props.children(id, describedBy)}
      {props.hint && (
        <small id={hintId} className="hint">
          {props.hint}
        </small>
      )}
      {props.error && (
        <small id={errId} className="field-error" role="alert">
          {props.error}
        </small>
      )}
    </div>
  );
}

/**
 * The browse blade of one resource type: Create (when it has a create page) and Refresh commands, the error box,
 * and a table of Name (linked to the resource's blade unless `linkNames` is false), Resource group, Location and
 * the type's own columns.
 */
export function ResourceListBlade<T extends { id: string; name: string; location?: string | undefined }>(props: {
  title: string;
  load: () => Promise<T[]>;
  empty: string;
  createPath?: string;
  linkNames?: boolean;
  columns?: Column<T>[];
}) {
  const { data, error, loading, reload } = useAsync(props.load, []);
  return (
    <Blade
      title={props.title}
      crumbs={[{ label: 'Home', to: '/' }]}
      commands={
        <>
          {props.createPath && (
            <button type="button" onClick={() => navigate(props.createPath!)}>
              Create
            </button>
          )}
          <button type="button" onClick={reload}>
            Refresh
          </button>
        </>
      }
    >
      <ErrorBox error={error} />
      {loading && !data ? (
        <Spinner />
      ) : (
        <DataTable
          label={props.title}
          rows={data ?? []}
          rowKey={(r) => r.id}
          empty={props.empty}
          columns={[
            { header: 'Name', cell: (r) => (props.linkNames === false ? r.name : <Link to={resourcePath(r.id)}>{r.name}</Link>) },
            { header: 'Resource group', cell: (r) => parseId(r.id).resourceGroup },
            { header: 'Location', cell: (r) => r.location ?? '' },
            ...(props.columns ?? []),
          ]}
        />
      )}
    </Blade>
  );
}

/** A resource-group picker field (the groups as listed by the API), with a hint to create one when there is none. */
export function ResourceGroupField(props: {
  groups: { id: string; name: string }[] | undefined;
  value: string;
  onChange: (name: string) => void;
  hint?: string;
  required?: boolean;
  /** Show "No resource groups yet … create one" when the list is empty. */
  offerCreate?: boolean;
}) {
  return (
    <>
      <Field label="Resource group" {...(props.hint ? { hint: props.hint } : {})}>
        {(id, d) => (
          <select id={id} aria-describedby={d} value={props.value} onChange={(e) => props.onChange(e.target.value)} required={props.required}>
            {(props.groups ?? []).map((g) => (
              <option key={g.id} value={g.name}>
                {g.name}
              </option>
            ))}
          </select>
        )}
      </Field>
      {props.offerCreate && props.groups && props.groups.length === 0 && (
        <Notice kind="warning">
          No resource groups yet. <Link to="/create/resourcegroup">Create a resource group</Link> first.
        </Notice>
      )}
    </>
  );
}

/** A region picker field. */
export function RegionField(props: { locations: { name: string; displayName: string }[] | undefined; value: string; onChange: (name: string) => void; hint?: string }) {
  return (
    <Field label="Region" {...(props.hint ? { hint: props.hint } : {})}>
      {(id, d) => (
        <select id={id} aria-describedby={d} value={props.value} onChange={(e) => props.onChange(e.target.value)}>
          {(props.locations ?? []).map((l) => (
            <option key={l.name} value={l.name}>
              {l.displayName}
            </option>
          ))}
        </select>
      )}
    </Field>
  );
}

export function Properties(props: { items: [string, ReactNode][]; label?: string }) {
  return (
    <dl className="props" aria-label={props.label}>
      {props.items.map(([k, v]) => (
        <div key={k}>
          <dt>{k}</dt>
          <dd>{v === undefined || v === null || v === '' ? '—' : v}</dd>
        </div>
      ))}
    </dl>
  );
}

export function StatusBadge(props: { status: string | undefined }) {
  const s = props.status ?? '';
  const cls = /^not /i.test(s) ? 'neutral' : /fail|error|denied/i.test(s) ? 'bad' : /progress|pending|cancelling|irpending/i.test(s) ? 'busy' : /complet|succe|protected|healthy|ready|running|enabled|encrypted/i.test(s) ? 'good' : 'neutral';
  return <span className={`badge ${cls}`}>{s || '—'}</span>;
}

export function fmtTime(t: string | number | undefined | null): string {
  if (t === undefined || t === null || t === '') return '—';
  const d = typeof t === 'number' ? new Date(t) : new Date(t);
  if (Number.isNaN(d.getTime()) || d.getUTCFullYear() <= 2001) return '—';
  return d.toLocaleString(undefined, { year: 'numeric', month: 'short', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

/** ISO-8601 duration (PT1H2M3.4S) or .NET TimeSpan (00:01:02.5) → "1h 2m 3s". */
export function fmtDuration(d: string | undefined): string {
  if (!d) return '—';
  let secs: number;
  const iso = /^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?)?$/.exec(d);
  const ts = /^(?:(\d+)\.)?(\d+):(\d+):([\d.]+)$/.exec(d);
  if (iso) secs = Number(iso[1] ?? 0) * 86400 + Number(iso[2] ?? 0) * 3600 + Number(iso[3] ?? 0) * 60 + Number(iso[4] ?? 0);
  else if (ts) secs = Number(ts[1] ?? 0) * 86400 + Number(ts[2]) * 3600 + Number(ts[3]) * 60 + Number(ts[4]);
  else return d;
  const h = Math.floor(secs / 3600);
  const m = Math.floor((secs % 3600) / 60);
  const s = Math.floor(secs % 60);
  return [h ? `${h}h` : '', m ? `${m}m` : '', `${s}s`].filter(Boolean).join(' ');
}

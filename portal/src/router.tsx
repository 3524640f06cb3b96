/**
 * A small history router. Portal URLs mirror the Azure portal's: `/browse/<type>` for lists, `/resource<ARM id>/<blade>`
 * for a resource's blades, `/create/<type>` for create forms. The server answers every such path with index.html.
 */
import { useEffect, useState, type AnchorHTMLAttributes, type MouseEvent } from 'react';

type Listener = () => void;
const listeners = new Set<Listener>();

export function navigate(to: string, o: { replace?: boolean } = {}): void {
  if (o.replace) history.replaceState(null, '', to);
  else history.pushState(null, '', to);
  for (const l of listeners) l();
  window.scrollTo(0, 0);
}

window.addEventListener('popstate', () => {
  for (const l of listeners) l();
});

export interface Location {
  path: string;
  query: URLSearchParams;
}

export function useLocation(): Location {
  const read = () => ({ path: decodeURIComponent(location.pathname), query: new URLSearchParams(location.search) });
  const [loc, setLoc] = useState<Location>(read);
  useEffect(() => {
    const l = () => setLoc(read());
    listeners.add(l);
    return () => {
      listeners.delete(l);
    };
  }, []);
  return loc;
}

/** Portal path of a resource blade: `/resource/subscriptions/…/vaults/kv1/access_policies`. */
export function resourcePath(id: string, blade?: string, query?: Record<string, string>): string {
  const encoded = id
    .split('/')
    .map((s) => encodeURIComponent(s))
    .join('/');
  const q = query && Object.keys(query).length ? '?' + new URLSearchParams(query).toString() : '';
  return `/resource${encoded}${blade ? '/' + blade : ''}${q}`;
}

export function Link(props: AnchorHTMLAttributes<HTMLAnchorElement> & { to: string }) {
  const { to, onClick, ...rest } = props;
  const click = (e: MouseEvent<HTMLAnchorElement>) => {
    onClick?.(e);
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(to);
  };
  return <a href={to} onClick={click} {...rest} />;
}

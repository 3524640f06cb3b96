/**
 * Sign-in state. The portal signs in with the server's own token endpoint (`POST /{tenant}/oauth2/v2.0/token`):
 * a user with the password grant, or an app (the bootstrap admin) with client credentials. One token whose audience
 * is this origin serves ARM and Graph. It is kept in sessionStorage (per tab, gone when the tab closes); passwords
 * and secrets are never stored.
 */
import { ApiError, toApiError } from './api';

export interface Session {
  token: string;
  expiresAt: number;
  tenantId: string;
  subscriptionId: string;
  subscriptionName: string;
  /** Who is signed in (user principal name or app id) and their display name from the token. */
  account: string;
  displayName: string;
}

const KEY = 'rsvault.session';
type Listener = () => void;
const listeners = new Set<Listener>();
let current: Session | undefined = load();
let signOutReason: string | undefined;

function load(): Session | undefined {
  try {
    const raw = sessionStorage.getItem(KEY);
    if (!raw) return undefined;
    const s = JSON.parse(raw) as Session;
    return s.expiresAt > Date.now() + 30_000 ? s : undefined;
  } catch {
    return undefined;
  }
}

export function session(): Session | undefined {
  if (current && current.expiresAt <= Date.now()) signOut('Your session has expired. Sign in again.');
  return current;
}

export function subscribe(l: Listener): () => void {
  listeners.add(l);
  return () => listeners.delete(l);
}

function emit() {
  for (const l of listeners) l();
}

export function takeSignOutReason(): string | undefined {
  const r = signOutReason;
  signOutReason = undefined;
  return r;
}

export function signOut(reason?: string): void {
  current = undefined;
  signOutReason = reason;
  sessionStorage.removeItem(KEY);
  emit();
}

export async function portalConfig(): Promise<{ tenantId: string }> {
  const res = await fetch('/portal/config', { headers: { accept: 'application/json' } });
  if (!res.ok) throw new ApiError(res.status, 'PortalConfigUnavailable', 'The server did not return the portal configuration.');
  return (await res.json()) as { tenantId: string };
}

export type Credentials = { kind: 'user'; username: string; password: string } | { kind: 'app'; clientId: string; clientSecret: string };

function claimsOf(token: string): Record<string, unknown> {
  try {
    const part = token.split('.')[1] ?? '';
    return JSON.parse(atob(part.replace(/-/g, '+').replace(/_/g, '/'))) as Record<string, unknown>;
  } catch {
    return {};
  }
}

export async function signIn(c: Credentials): Promise<Session> {
  const { tenantId } = await portalConfig();
  const form = new URLSearchParams({ scope: `${location.origin}//.default` });
  if (c.kind === 'user') {
    form.set('grant_type', 'password');
    form.set('username', c.username);
    form.set('password', c.password);
  } else {
    form.set('grant_type', 'client_credentials');
    form.set('client_id', c.clientId);
    form.set('client_secret', c.clientSecret);
  }
  const res = await fetch(`/${encodeURIComponent(tenantId)}/oauth2/v2.0/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
    body: form.toString(),
  });
  const body = (await res.json().catch(() => ({}))) as { access_token?: string; expires_in?: number };
  if (!res.ok || !body.access_token) throw toApiError(res.status, body);
  const token = body.access_token;
  // Which subscription: the first one this principal can read (rsvault has one per installation).
  const subsRes = await fetch('/subscriptions?api-version=2021-04-01', { headers: { authorization: `Bearer ${token}`, accept: 'application/json' } });
  const subs = (await subsRes.json().catch(() => ({}))) as { value?: { subscriptionId: string; displayName: string }[] };
  if (!subsRes.ok) throw toApiError(subsRes.status, subs);
  const sub = subs.value?.[0];
  if (!sub) {
    throw new ApiError(403, 'NoSubscriptionAccess', 'You are signed in, but you have no role on any subscription.', 'Ask an Owner of the subscription to assign you a role on it (for example Contributor), then sign in again.');
  }
  const claims = claimsOf(token);
  current = {
    token,
    expiresAt: Date.now() + (body.expires_in ?? 3600) * 1000,
    tenantId,
    subscriptionId: sub.subscriptionId,
    subscriptionName: sub.displayName,
    account: c.kind === 'user' ? c.username : c.clientId,
    displayName: typeof claims.name === 'string' && claims.name ? claims.name : c.kind === 'user' ? c.username : c.clientId,
  };
  sessionStorage.setItem(KEY, JSON.stringify(current));
  emit();
  return current;
}

/**
 * Serves the web portal (the Vite build in `portal/dist`) at `/`, with an SPA fallback for the portal's own client-side
 * routes, and a public `GET /portal/config` that tells the sign-in page where the token endpoint is.
 *
 * Portal routes live under prefixes no API uses (`/browse`, `/resource`, `/create`, `/signin`, `/home`, `/portal`), so
 * the fallback can never shadow an ARM, Graph, token or Key Vault data-plane path: those keep their own 404s.
 */
import type { FastifyInstance } from 'fastify';
import fastifyStatic from '@fastify/static';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface PortalOptions {
  /** Directory with index.html and assets/ (default: `<repo>/portal/dist`, beside src/ and dist/). */
  distDir?: string | undefined;
  /** What the sign-in page needs before it has a token: the tenant the token endpoint serves. */
  config: () => { tenantId: string };
}

/** Top-level path segments that belong to the portal's client-side router. */
export const PORTAL_ROUTE_PREFIXES = ['browse', 'resource', 'create', 'signin', 'home'] as const;

export function defaultPortalDir(): string {
  // src/platform/http/static.ts and dist/platform/http/static.js are both three levels below the repository root.
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'portal', 'dist');
}

const NOT_BUILT = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>rsvault</title></head>
<body><h1>rsvault</h1><p>The portal is not built. Run <code>npm run build</code> (or <code>npm ci</code>), then restart <code>rsvault serve</code>.</p></body></html>`;

export async function registerPortal(app: FastifyInstance, opts: PortalOptions): Promise<void> {
  const root = opts.distDir ?? defaultPortalDir();
  const indexPath = path.join(root, 'index.html');
  const built = existsSync(indexPath);
  const index = built ? readFileSync(indexPath, 'utf8') : NOT_BUILT;
  const pub = { plane: 'public' as const };

  app.get('/portal/config', { config: pub }, async (_req, reply) => {
    void reply.header('cache-control', 'no-store');
    return { tenantId: opts.config().tenantId };
  });

  const sendIndex = async (_req: unknown, reply: import('fastify').FastifyReply) =>
    reply.type('text/html; charset=utf-8').header('cache-control', 'no-cache').send(index);

  await app.register(async (scope) => {
    // Every route registered in this scope (the static files too) is public: the portal's files carry no data.
    scope.addHook('onRoute', (route) => {
      route.config = { ...(route.config ?? {}), plane: 'public' };
    });
    if (built) {
      // wildcard:false registers one route per file found now (the build is immutable while the server runs),
      // so the static plugin claims no catch-all route.
      await scope.register(fastifyStatic, { root, wildcard: false, index: false, cacheControl: false, setHeaders: (res, file) => {
        res.setHeader('cache-control', /[\\/]assets[\\/]/.test(file) ? 'public, max-age=31536000, immutable' : 'no-cache');
      } });
    }
    scope.get('/', { config: pub }, sendIndex);
    for (const p of PORTAL_ROUTE_PREFIXES) {
      scope.get(`/${p}`, { config: pub }, sendIndex);
      scope.get(`/${p}/*`, { config: pub }, sendIndex);
    }
  });
}

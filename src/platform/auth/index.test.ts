import { describe, expect, it } from 'vitest';
import Fastify from 'fastify';
import { generateKeyPairSync } from 'node:crypto';
import { registerAuth, RouteAuthorizationError, TokenKeys, TokenService } from './index.js';

function appWithAuth() {
  const app = Fastify();
  const pem = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const tokens = new TokenService(TokenKeys.fromPem(pem), () => 'https://localhost:1', { arm: () => ['https://management.azure.com/'], graph: () => [], vault: () => [], storage: () => [] }, 3600, () => 'tenant-1');
  registerAuth(app, { tokens, authorizer: { checkAccess: async () => true } });
  return app;
}

describe('routes fail closed (registerAuth)', () => {
  it('refuses to start when a route has no action and no open/public marker, naming the route', async () => {
    const app = appWithAuth();
    app.get('/subscriptions/:sub/things', { config: { action: 'X/things/read' } }, async () => ({}));
    app.get('/healthz', { config: { plane: 'public' } }, async () => ({}));
    app.get('/v1.0/me', { config: { plane: 'graph', open: 'authenticated' } }, async () => ({}));
    app.post('/subscriptions/:sub/forgotten', async () => ({}));
    const err = await app.ready().then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(RouteAuthorizationError);
    expect((err as Error).message).toContain('POST /subscriptions/:sub/forgotten');
    expect((err as Error).message).not.toContain('/healthz');
    await app.close().catch(() => undefined);
  });

  it('starts when every route has an action or an explicit marker (also routes a scope marks in its own onRoute hook)', async () => {
    const app = appWithAuth();
    app.get('/a', { config: { action: 'X/read' } }, async () => ({}));
    app.get('/b', { config: { plane: 'vault', open: 'authenticated' } }, async () => ({}));
    await app.register(async (scope) => {
      scope.addHook('onRoute', (r) => void (r.config = { ...(r.config ?? {}), plane: 'public' }));
      scope.get('/assets/x.js', async () => '');
    });
    await expect(app.ready()).resolves.toBeDefined();
    await app.close();
  });
});

describe('TokenService.verify', () => {
  const pem = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const svc = (tenant: string) => new TokenService(TokenKeys.fromPem(pem), () => 'https://localhost:1', { arm: () => ['https://management.azure.com/'], graph: () => [], vault: () => [], storage: () => [] }, 3600, () => tenant);
  it('refuses a token of another tenant signed by the same key', async () => {
    const { token } = await svc('other-tenant').issue({ tid: 'other-tenant', oid: 'o1', idtyp: 'app', aud: 'https://management.azure.com/' });
    await expect(svc('tenant-1').verify(token, 'arm')).rejects.toThrow(/another tenant/);
    await expect(svc('other-tenant').verify(token, 'arm')).resolves.toMatchObject({ objectId: 'o1' });
  });
});

/**
 * Bearer-token authentication and RBAC enforcement for every HTTP plane.
 * Tokens are RS256 JWTs shaped like Azure AD v1 app tokens (tid, oid, appid, aud, iss, iat/nbf/exp).
 * The token *issuer* lives in identity; this module only verifies and authorizes, through the Authorizer
 * interface identity implements (platform imports no slice).
 */
import { SignJWT, jwtVerify, exportJWK, type JWK, type CryptoKey } from 'jose';
import { createHash, createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ArmError, HttpError } from '../http/errors.js';

export type PrincipalKind = 'ServicePrincipal' | 'User';

/** Who is calling: the verified token's subject. */
export interface Caller {
  objectId: string;
  tenantId: string;
  appId?: string | undefined;
  kind: PrincipalKind;
  audience: string;
  /** True for the service's own internal calls (workers acting as a principal, never over HTTP). */
  internal?: boolean;
}

declare module 'fastify' {
  interface FastifyRequest {
    caller?: Caller;
  }
}

/** Token audiences per plane: ARM, Graph, Key Vault data plane, Storage (blob) data plane (`https://storage.azure.com`). */
export type Plane = 'arm' | 'graph' | 'vault' | 'storage';

export interface Authorizer {
  /** May `caller` perform `action` (e.g. Microsoft.Resources/subscriptions/resourceGroups/write) at `scope`? */
  checkAccess(caller: Caller, scope: string, action: string): Promise<boolean>;
}

/** Token signing key pair (RSA 2048), loaded by the composition root. */
export class TokenKeys {
  readonly kid: string;
  private constructor(
    readonly privateKey: KeyObject,
    readonly publicKey: KeyObject,
  ) {
    this.kid = createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('base64url').slice(0, 27);
  }
  static fromPem(privatePem: string): TokenKeys {
    const priv = createPrivateKey(privatePem);
    return new TokenKeys(priv, createPublicKey(priv));
  }
  async jwks(): Promise<{ keys: JWK[] }> {
    const jwk = await exportJWK(this.publicKey as unknown as CryptoKey);
    return { keys: [{ ...jwk, kid: this.kid, use: 'sig', alg: 'RS256', kty: 'RSA', x5t: this.kid }] };
  }
}

export interface TokenClaims {
  tid: string;
  oid: string;
  appid?: string | undefined;
  idtyp: 'app' | 'user';
  aud: string;
  name?: string | undefined;
}

export class TokenService {
  constructor(
    private readonly keys: TokenKeys,
    /** Issuer prefix: `https://localhost:{port}` — tokens carry `{issuerBase}/{tid}/`. */
    private readonly issuerBase: () => string,
    private readonly audiences: Record<Plane, () => string[]>,
    private readonly lifetimeSec: number,
    /** The installation's tenant: tokens naming another `tid` are refused (undefined: any tenant the key signed). */
    private readonly tenantId?: () => string,
  ) {}

  issuerFor(tid: string): string {
    return `${this.issuerBase()}/${tid}/`;
  }

  async issue(claims: TokenClaims): Promise<{ token: string; expiresIn: number }> {
    const now = Math.floor(Date.now() / 1000);
    const jwt = new SignJWT({
      tid: claims.tid,
      oid: claims.oid,
      sub: claims.oid,
      ...(claims.appid ? { appid: claims.appid, azp: claims.appid, appidacr: '1' } : {}),
      ...(claims.name ? { name: claims.name } : {}),
      idtyp: claims.idtyp,
      ver: '1.0',
    })
      .setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid: this.keys.kid })
      .setIssuer(this.issuerFor(claims.tid))
      .setAudience(claims.aud)
      .setIssuedAt(now)
      .setNotBefore(now - 60)
      .setExpirationTime(now + this.lifetimeSec);
    return { token: await jwt.sign(this.keys.privateKey as unknown as CryptoKey), expiresIn: this.lifetimeSec };
  }

  jwks(): Promise<{ keys: JWK[] }> {
    return this.keys.jwks();
  }

  audiencesOf(plane: Plane): string[] {
    return this.audiences[plane]();
  }

  /** Verify signature, time and audience for `plane`; returns the caller or a reason. */
  async verify(token: string, plane: Plane): Promise<Caller> {
    const { payload } = await jwtVerify(token, this.keys.publicKey as unknown as CryptoKey, {
      algorithms: ['RS256'],
      clockTolerance: 60,
      // A token without an expiry would be valid forever: refuse it, whoever signed it.
      requiredClaims: ['exp', 'iat', 'tid', 'oid'],
    });
    const aud = typeof payload.aud === 'string' ? payload.aud : Array.isArray(payload.aud) ? (payload.aud[0] ?? '') : '';
    const accepted = this.audiences[plane]().map(normAud);
    if (!accepted.includes(normAud(aud))) throw new AudienceError(aud, plane);
    const tid = String(payload.tid ?? '');
    if (payload.iss !== this.issuerFor(tid)) throw new Error('issuer mismatch');
    if (this.tenantId && tid.toLowerCase() !== this.tenantId().toLowerCase()) throw new Error('token of another tenant');
    return {
      objectId: String(payload.oid ?? ''),
      tenantId: tid,
      appId: typeof payload.appid === 'string' ? payload.appid : undefined,
      kind: payload.idtyp === 'user' ? 'User' : 'ServicePrincipal',
      audience: aud,
    };
  }
}

export class AudienceError extends Error {
  constructor(
    readonly audience: string,
    readonly plane: Plane,
  ) {
    super(`audience '${audience}' is not valid for the ${plane} plane`);
  }
}

export const normAud = (a: string): string => a.toLowerCase().replace(/\/+$/, '');

/** Extracts a bearer token, or undefined. */
export function bearerOf(req: FastifyRequest): string | undefined {
  const h = req.headers.authorization;
  if (!h) return undefined;
  const m = /^Bearer\s+(\S+)$/i.exec(h);
  return m?.[1];
}

/** The ARM 401 (InvalidAuthenticationToken / AuthenticationFailed). */
export function armUnauthorized(message: string): ArmError {
  return new ArmError(401, 'InvalidAuthenticationToken', message, {
    headers: { 'www-authenticate': 'Bearer error="invalid_token"' },
    recommendation: 'Sign in again (rsvault login) or request a new token for this resource.',
  });
}

export function authorizationFailed(caller: Caller, action: string, scope: string): ArmError {
  return new ArmError(
    403,
    'AuthorizationFailed',
    `The client '${caller.appId ?? caller.objectId}' with object id '${caller.objectId}' does not have authorization to perform action '${action}' over scope '${scope}' or the scope is invalid. If access was recently granted, please refresh your credentials.`,
    { recommendation: `Ask an Owner to assign a role that allows '${action}': rsvault role assignment create --assignee ${caller.appId ?? caller.objectId} --role Contributor --scope ${scope}` },
  );
}

/** A route declared without an authorization rule: the server refuses to start. */
export class RouteAuthorizationError extends Error {
  override name = 'RouteAuthorizationError';
}

export interface AuthHookOptions {
  tokens: TokenService;
  authorizer: Authorizer;
  /** Planes that answer missing/invalid tokens themselves (the Key Vault challenge). */
  challenge?: Partial<Record<Plane, (req: FastifyRequest, reason: string) => HttpError>>;
}

/**
 * Registers the authentication (onRequest, before the body is read) and authorization (preHandler, after params
 * are parsed) hooks. Routes declare `config.plane` and `config.action`.
 */
export function registerAuth(app: FastifyInstance, opts: AuthHookOptions): void {
  // Fail closed: every route must name its RBAC action, or say it is public or open to any authenticated caller.
  // Checked when the app is ready (scopes may still set a route's config in their own onRoute hooks until then).
  const routes: { method: string | string[]; url: string; route: { config?: unknown } }[] = [];
  app.addHook('onRoute', (route) => void routes.push({ method: route.method, url: route.url, route }));
  app.addHook('onReady', async () => {
    const open = routes.filter(({ route }) => {
      const cfg = (route.config ?? {}) as { plane?: string; action?: string; open?: string };
      return !cfg.action && cfg.plane !== 'public' && cfg.open !== 'authenticated';
    });
    if (open.length) {
      const names = open.map((r) => `${[r.method].flat().join(',')} ${r.url}`);
      throw new RouteAuthorizationError(
        `route${names.length > 1 ? 's' : ''} without an authorization rule: ${names.join('; ')}. Give each config.action (an RBAC action), or mark it config.open: 'authenticated' or config.plane: 'public'.`,
      );
    }
  });
  app.addHook('onRequest', async (req) => {
    const plane = req.routeOptions.config?.plane ?? 'arm';
    if (plane === 'public' || !req.routeOptions.url) return;
    const token = bearerOf(req);
    const fail = (reason: string): HttpError => opts.challenge?.[plane]?.(req, reason) ?? armUnauthorized(reason);
    if (!token) throw fail("The request is missing an access token: send 'Authorization: Bearer <token>'.");
    try {
      req.caller = await opts.tokens.verify(token, plane);
    } catch (e) {
      if (e instanceof AudienceError) {
        throw fail(`The access token has an invalid audience '${e.audience}' for this endpoint; request a token for one of: ${opts.tokens.audiencesOf(plane).join(', ')}.`);
      }
      const msg = (e as { code?: string }).code === 'ERR_JWT_EXPIRED' ? 'The access token has expired.' : 'The access token is invalid.';
      throw fail(msg);
    }
  });
  app.addHook('preHandler', async (req) => {
    const cfg = req.routeOptions.config;
    if (!cfg?.action || !req.caller) return;
    const scope = cfg.scope ? cfg.scope(req) : decodeURIComponent(req.url.replace(/\?.*$/, ''));
    if (!(await opts.authorizer.checkAccess(req.caller, scope, cfg.action))) {
      throw authorizationFailed(req.caller, cfg.action, scope);
    }
  });
}

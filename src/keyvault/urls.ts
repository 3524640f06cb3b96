/**
 * The one place Key Vault URLs are built. Every vault URI (`properties.vaultUri`), key `kid`, secret `id`, the ADE
 * encryption settings on disks and VMs, the BEK tag `DiskEncryptionKeyEncryptionKeyURL`, recovery points'
 * `keyAndSecret` and the restore outputs come from here, so that clients can reach what they are handed:
 * `https://{vault}.{hostSuffix}[:{publicPort}]/{path}` — the port is left out when it is 443.
 *
 * `hostSuffix` is `--keyvault-host-suffix` (default `vault.localhost`); `publicPort` is `--keyvault-public-port`
 * (default: the port the server listens on), for a deployment behind a reverse proxy answering on 443.
 *
 * URLs stored before (without the port, or on an older suffix) are normalized when read: `canonical()` rebuilds any
 * object URL of one of this installation's vault hosts from the vault name and the object path, so the same vault
 * name + object path is the same object whatever port or suffix it was written with.
 */
export interface VaultUrlOptions {
  /** `vault.localhost`: vaults live at https://{name}.{suffix}. */
  hostSuffix: string;
  /** The port clients reach the vault hosts on (a getter: the listen port is known only after listen). */
  publicPort: () => number;
  /** Older host suffixes whose URLs are rewritten onto `hostSuffix` when read (default: `vault.localhost`). */
  legacySuffixes?: string[] | undefined;
}

export interface VaultObjectRef {
  vaultName: string;
  collection: string;
  name: string;
  version?: string | undefined;
}

export class VaultUrls {
  private readonly suffixes: string[];

  constructor(private readonly o: VaultUrlOptions) {
    this.suffixes = [...new Set([o.hostSuffix, ...(o.legacySuffixes ?? ['vault.localhost'])].map((s) => s.toLowerCase().replace(/^\./, '')))];
  }

  get hostSuffix(): string {
    return this.o.hostSuffix;
  }

  /** `https://vault.localhost:8443` (no port when 443): the Key Vault token resource / challenge resource. */
  resource(): string {
    return `https://${this.o.hostSuffix}${this.portPart()}`;
  }

  private portPart(): string {
    const p = this.o.publicPort();
    return p === 443 || p === 0 ? '' : `:${p}`;
  }

  /** `https://kv1.vault.localhost:8443/` — a vault's URI, with the trailing slash as ARM shows `vaultUri`. */
  vaultUri(vaultName: string): string {
    return `https://${vaultName.toLowerCase()}.${this.o.hostSuffix}${this.portPart()}/`;
  }

  /** `https://kv1.vault.localhost:8443/secrets/{name}/{version}` (versionless when no version). */
  objectUrl(vaultName: string, collection: string, name: string, version?: string): string {
    return `${this.vaultUri(vaultName)}${collection}/${name}${version ? `/${version}` : ''}`;
  }

  /** Is `host` (without port) a vault host of this installation (current or legacy suffix)? */
  isVaultHost(hostname: string): boolean {
    const h = hostname.toLowerCase();
    return this.suffixes.some((s) => h.endsWith(`.${s}`) && h.length > s.length + 1 && !h.slice(0, -s.length - 1).includes('.'));
  }

  /** The vault name + object of a Key Vault object URL (any port), or undefined when it is not one. */
  parse(url: string): VaultObjectRef | undefined {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      return undefined;
    }
    if (u.protocol !== 'https:') return undefined;
    const parts = u.pathname.split('/').filter(Boolean);
    if (parts.length < 2 || parts.length > 3) return undefined;
    return { vaultName: u.hostname.split('.')[0]!.toLowerCase(), collection: parts[0]!.toLowerCase(), name: parts[1]!, version: parts[2] || undefined };
  }

  /**
   * The reachable form of a Key Vault URL of this installation: same vault name and path, current suffix and public
   * port. URLs of other hosts (e.g. `*.vault.azure.net`) and non-URLs come back unchanged.
   */
  canonical(url: string): string;
  canonical(url: string | undefined): string | undefined;
  canonical(url: string | undefined): string | undefined {
    if (!url) return url;
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      return url;
    }
    if (u.protocol !== 'https:' || !this.isVaultHost(u.hostname)) return url;
    const name = u.hostname.split('.')[0]!;
    const p = u.pathname.replace(/^\/+/, '');
    return `${this.vaultUri(name)}${p}${u.search}`;
  }

  /** Deep copy of a JSON value with every string that is a vault URL of this installation made canonical. */
  canonicalDeep<T>(v: T): T {
    if (typeof v === 'string') return this.canonical(v) as T;
    if (Array.isArray(v)) return v.map((x: unknown) => this.canonicalDeep(x)) as T;
    if (v && typeof v === 'object') {
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v as Record<string, unknown>)) out[k] = this.canonicalDeep(x);
      return out as T;
    }
    return v;
  }
}

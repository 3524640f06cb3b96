/** The portal shell: top bar, left hub menu, and the blade for the current URL. */
import { useEffect, useState, useSyncExternalStore, type ReactNode } from 'react';
import { session, signOut, subscribe } from './session';
import { Link, navigate, useLocation } from './router';
import { SERVICES } from './services';
import { SignIn } from './blades/SignIn';
import { Home, MoreServices, Subscriptions, AllResources } from './blades/Hub';
import { ResourceGroups, CreateResourceGroup, ResourceGroupOverview } from './blades/ResourceGroups';
import { KeyVaultList, KeyVaultBlade } from './blades/KeyVaults';
import { VmList, VmBlade, DiskList } from './blades/VirtualMachines';
import { CreateStorageAccount, StorageAccounts } from './blades/Storage';
import { RsvList, CreateRsv, RsvBlade, AllBackupJobs } from './blades/RecoveryVaults';
import { Blade } from './ui';

function useSession() {
  return useSyncExternalStore(subscribe, session);
}

/** Maps a portal path to its blade. `/resource<ARM id>[/<blade>]` by the id's resource type. */
function route(path: string, query: URLSearchParams): ReactNode {
  const p = path.replace(/\/+$/, '') || '/';
  switch (p.toLowerCase()) {
    case '/':
    case '/home':
      return <Home />;
    case '/browse/services':
      return <MoreServices />;
    case '/browse/resourcegroups':
      return <ResourceGroups />;
    case '/create/resourcegroup':
      return <CreateResourceGroup />;
    case '/browse/keyvaults':
      return <KeyVaultList />;
    case '/browse/virtualmachines':
      return <VmList />;
    case '/browse/disks':
      return <DiskList />;
    case '/browse/storageaccounts':
      return <StorageAccounts />;
    case '/create/storageaccount':
      return <CreateStorageAccount query={query} />;
    case '/browse/recoveryvaults':
      return <RsvList />;
    case '/create/recoveryvault':
      return <CreateRsv />;
    case '/browse/backupjobs':
      return <AllBackupJobs />;
    case '/browse/subscriptions':
      return <Subscriptions />;
    case '/browse/resources':
      return <AllResources />;
    default:
      break;
  }
  if (/^\/resource\/subscriptions\//i.test(p)) {
    const rest = p.slice('/resource'.length);
    const lower = rest.toLowerCase();
    const m = (re: RegExp) => re.exec(rest);
    let r = m(/^(\/subscriptions\/[^/]+\/resourceGroups\/[^/]+\/providers\/Microsoft\.KeyVault\/vaults\/[^/]+)(?:\/(.*))?$/i);
    if (r) return <KeyVaultBlade id={r[1]!} blade={r[2] ?? 'overview'} query={query} />;
    r = m(/^(\/subscriptions\/[^/]+\/resourceGroups\/[^/]+\/providers\/Microsoft\.Compute\/virtualMachines\/[^/]+)(?:\/(.*))?$/i);
    if (r) return <VmBlade id={r[1]!} blade={r[2] ?? 'overview'} query={query} />;
    r = m(/^(\/subscriptions\/[^/]+\/resourceGroups\/[^/]+\/providers\/Microsoft\.RecoveryServices\/vaults\/[^/]+)(?:\/(.*))?$/i);
    if (r) return <RsvBlade id={r[1]!} rest={r[2] ?? 'overview'} query={query} />;
    r = m(/^(\/subscriptions\/[^/]+\/resourceGroups\/[^/]+)(?:\/(overview))?$/i);
    if (r && !lower.includes('/providers/')) return <ResourceGroupOverview id={r[1]!} />;
  }
  return (
    <Blade title="Not found">
      <p>There is no page at {path}.</p>
      <Link to="/">Go to Home</Link>
    </Blade>
  );
}

export function App() {
  const s = useSession();
  const loc = useLocation();
  const [menuOpen, setMenuOpen] = useState(false);

  useEffect(() => setMenuOpen(false), [loc.path]);
  useEffect(() => {
    if (s && loc.path === '/signin') navigate('/', { replace: true });
  }, [s, loc.path]);

  if (!s) {
    return <SignIn returnTo={loc.path === '/signin' ? '/' : loc.path + (loc.query.toString() ? `?${loc.query.toString()}` : '')} />;
  }
  const active = (p: string) => loc.path.toLowerCase().startsWith(p);
  return (
    <div className="shell">
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <button type="button" className="menu-toggle" aria-expanded={menuOpen} aria-controls="hub-menu" onClick={() => setMenuOpen(!menuOpen)}>
          Menu
        </button>
        <Link to="/" className="brand">
          rsvault
        </Link>
        <span className="sub" title={s.subscriptionId}>
          {s.subscriptionName}
        </span>
        <span className="account" aria-label="Signed in as">
          {s.displayName}
        </span>
        <button type="button" className="link-button" onClick={() => signOut()}>
          Sign out
        </button>
      </header>
      <div className="body">
        <nav id="hub-menu" aria-label="Hub menu" className={`hub${menuOpen ? ' open' : ''}`}>
          <ul>
            <li>
              <Link to="/" aria-current={loc.path === '/' || loc.path === '/home' ? 'page' : undefined}>
                Home
              </Link>
            </li>
            {SERVICES.filter((x) => x.favorite).map((x) => (
              <li key={x.path}>
                <Link to={x.path} aria-current={active(x.path) ? 'page' : undefined}>
                  {x.name}
                </Link>
              </li>
            ))}
            <li>
              <Link to="/browse/backupjobs" aria-current={active('/browse/backupjobs') ? 'page' : undefined}>
                Backup jobs
              </Link>
            </li>
            <li className="more">
              <Link to="/browse/services" aria-current={active('/browse/services') ? 'page' : undefined}>
                More services
              </Link>
            </li>
          </ul>
        </nav>
        <main id="main">{route(loc.path, loc.query)}</main>
      </div>
    </div>
  );
}

/** Import rules of ARCHITECTURE.md §2, enforced in `npm run check`. The reason stands next to each rule. */
module.exports = {
  forbidden: [
    {
      name: 'engine-is-standalone',
      comment: 'engine/ knows bytes, chunks and manifests only: it must never depend on a slice or on platform/',
      severity: 'error',
      from: { path: '^src/engine/' },
      to: { path: '^src/', pathNot: '^src/engine/' },
    },
    {
      name: 'platform-imports-no-slice',
      comment: 'platform/ is plumbing with no domain words: it must not import a slice, the CLI or the client',
      severity: 'error',
      from: { path: '^src/platform/' },
      to: { path: '^src/(identity|resources|keyvault|compute|storage|recovery|cli|client)/' },
    },
    {
      name: 'slices-import-only-index-of-other-slices',
      comment: "a slice may import another slice only through that slice's index.ts (its public service interface)",
      severity: 'error',
      from: { path: '^src/(identity|resources|keyvault|compute|storage|recovery)/' },
      to: { path: '^src/(identity|resources|keyvault|compute|storage|recovery)/[^/]+/?.*', pathNot: ['^src/$1/', '^src/(identity|resources|keyvault|compute|storage|recovery)/index\\.ts$'] },
    },
    {
      name: 'cli-and-portal-use-the-client-only',
      comment: 'the CLI talks to a server over HTTPS through client/: it must never import server code',
      severity: 'error',
      from: { path: '^src/cli/' },
      to: { path: '^src/', pathNot: '^src/(cli|client)/' },
    },
    {
      name: 'client-is-standalone',
      comment: 'client/ is shared with the CLI, the tests and the portal: no server code',
      severity: 'error',
      from: { path: '^src/client/' },
      to: { path: '^src/', pathNot: '^src/client/' },
    },
    {
      name: 'nothing-imports-main',
      comment: 'main.ts is the composition root; importing it would create a second one',
      severity: 'error',
      from: {},
      to: { path: '^src/main\\.ts$' },
    },
    {
      name: 'no-circular',
      comment: 'cycles make the rooms impossible to read one at a time',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '\\.test\\.ts$' },
    tsConfig: { fileName: 'tsconfig.json' },
    tsPreCompilationDeps: true,
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'], extensions: ['.ts', '.js'] },
  },
};

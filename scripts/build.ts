// Bundles the agent into one self-contained file, dist/pgkeep.mjs, that runs with `node` and needs
// no node_modules at run time (the host gets one file; the Fargate image copies the same file).
import { chmod } from 'node:fs/promises';
import { build } from 'esbuild';

const outfile = 'dist/pgkeep.mjs';
await build({
  entryPoints: ['agent/main.ts'],
  outfile,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node22',
  minify: false,
  sourcemap: false,
  legalComments: 'none',
  banner: {
    // Some bundled CommonJS dependencies (the AWS SDK's) call require(); ESM has none of its own.
    js: "#!/usr/bin/env node\nimport { createRequire as __pgkeepCreateRequire } from 'node:module';\nconst require = __pgkeepCreateRequire(import.meta.url);",
  },
  logLevel: 'warning',
});
await chmod(outfile, 0o755);

// Bundles the agent into dist/: pgkeep.mjs, the entry, and dist/chunks/, the code each command
// loads on demand. Runs with `node`, needs no node_modules at run time; install the whole directory
// (the Fargate image copies the same one).
//
// Why chunks rather than one file: archive_command starts the agent once per WAL segment, and a
// single 3 MB bundle cost ~125 ms before any work (V8 compiling it, and every Node built-in any
// command uses loaded up front); the split entry starts in ~45 ms and loads only what its command
// imports.
import { chmod, rm } from 'node:fs/promises';
import { build } from 'esbuild';

const outdir = 'dist';
await rm(outdir, { recursive: true, force: true });
await build({
  entryPoints: { pgkeep: 'agent/entry.ts' },
  outdir,
  outExtension: { '.js': '.mjs' },
  chunkNames: 'chunks/[name]-[hash]',
  bundle: true,
  splitting: true,
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
await chmod(`${outdir}/pgkeep.mjs`, 0o755);

// Bundles the agent into dist/: pgkeep.mjs, the entry, and dist/chunks/, the code each command
// loads on demand. Runs with `node`, needs no node_modules at run time; install the whole directory
// (the Fargate image copies the same one).
//
// Why chunks rather than one file: archive_command starts the agent once per WAL segment, and a
// single 3 MB bundle cost ~125 ms before any work (V8 compiling it, and every Node built-in any
// command uses loaded up front); the split entry starts in ~45 ms and loads only what its command
// imports.
//
// Why wal-push.mjs, a second build: split by which commands share a module, wal-push loaded ~23
// chunks, each a file for the module loader to find, read and link. Built on its own, everything
// a push needs is one file; what it loads only sometimes (the S3 driver, the configuration's
// validation) stays in chunks of its own. The entry loads it in place of main for `wal-push`; its
// classes are copies of main's, which is why exit codes go by an error's name (agent/exit-codes.ts).
import { chmod, rm } from 'node:fs/promises';
import { type BuildOptions, build, type Plugin } from 'esbuild';

const outdir = 'dist';
const WAL_PUSH_PROGRAM = 'agent/wal-push-program.ts';

/** The entry imports the WAL push program as the other build's output, not as its own chunk. */
const walPushProgramExternal: Plugin = {
  name: 'wal-push-program-external',
  setup(b) {
    b.onResolve({ filter: /\/wal-push-program\.ts$/ }, () => ({ path: './wal-push.mjs', external: true }));
  },
};

const common: BuildOptions = {
  outdir,
  outExtension: { '.js': '.mjs' },
  // Both builds write here; names carry a hash of the content, so the same name is the same file.
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
};

await rm(outdir, { recursive: true, force: true });
await build({ ...common, entryPoints: { pgkeep: 'agent/entry.ts' }, plugins: [walPushProgramExternal] });
await build({ ...common, entryPoints: { 'wal-push': WAL_PUSH_PROGRAM } });
await chmod(`${outdir}/pgkeep.mjs`, 0o755);

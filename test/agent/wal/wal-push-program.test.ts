/**
 * archive_command runs `pgkeep wal-push` through its own bundle (dist/wal-push.mjs), never the
 * CLI's chunks: proven on a copy of dist/ without main's chunk, where every other command fails.
 * Through the generated archive_command line, as the server's user, each error kind wal-push maps
 * still exits with its code (agent/exit-codes.ts), with the classes of that bundle.
 */
import { spawn } from 'node:child_process';
import { chmod, chown, cp, mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from '../../../agent/exit-codes.ts';
import { archiveCommandLine } from '../../../agent/wal/spool.ts';
import { type CliResult, NODE, outputOf, PROJECT_ROOT } from '../../support/pgkeep-cli.ts';
import { walSegment } from '../../support/wal-segment.ts';
import { type Harness, makeHarness } from './harness.ts';

const SYSID = 7333333333333333333n;

let h: Harness;
let dataDir: string;
let bundle: string;

async function own(path: string): Promise<void> {
  if (h.user) await chown(path, h.user.uid, h.user.gid);
}

async function walFile(name: string, content: Buffer): Promise<void> {
  const path = join(dataDir, 'pg_wal', name);
  await writeFile(path, content);
  await own(path);
}

/** Runs `command` with sh in the data directory as the server's user, as PostgreSQL runs archive_command. */
function sh(command: string, env: Record<string, string> = {}): Promise<CliResult> {
  return outputOf(
    spawn('sh', ['-c', command], {
      ...(h.user ?? {}),
      cwd: dataDir,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
}

/** The archive_command line for WAL file `name`, with %p and %f expanded as PostgreSQL does. */
function archiveCommand(name: string): string {
  const line = archiveCommandLine({
    nodePath: NODE,
    bundlePath: join(bundle, 'pgkeep.mjs'),
    spoolDir: h.spoolDir,
    cluster: h.cluster,
    configPath: h.configPath,
  });
  return line.replaceAll('%p', `pg_wal/${name}`).replaceAll('%f', name);
}

beforeAll(async () => {
  h = await makeHarness('program', { wal: { retrySeconds: 1 } });
  dataDir = join(h.dir, 'data');
  for (const d of [dataDir, join(dataDir, 'pg_wal'), join(dataDir, 'global')]) {
    await mkdir(d, { mode: 0o700 });
    await own(d);
  }
  const control = Buffer.alloc(8192);
  control.writeBigUInt64LE(SYSID, 0);
  await writeFile(join(dataDir, 'global', 'pg_control'), control);
  // The built agent without main's chunk: what wal-push does not need may go missing.
  bundle = join(h.dir, 'dist');
  await cp(join(PROJECT_ROOT, 'dist'), bundle, { recursive: true });
  const main = (await readdir(join(bundle, 'chunks'))).filter((f) => f.startsWith('main-'));
  expect(main).toHaveLength(1);
  await rm(join(bundle, 'chunks', main[0] as string));
  for (const f of [
    bundle,
    join(bundle, 'chunks'),
    join(bundle, 'pgkeep.mjs'),
    join(bundle, 'wal-push.mjs'),
  ]) {
    await own(f);
  }
  await chmod(bundle, 0o755);
});

afterAll(async () => {
  if (h) await rm(h.dir, { recursive: true, force: true });
});

describe('wal-push from its own bundle, as archive_command', () => {
  it('does not load the CLI: other commands fail in the same copy of dist/', async () => {
    const result = await sh(`${NODE} ${join(bundle, 'pgkeep.mjs')} version`);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/main-.*\.mjs/);
  });

  it('exits 0 for a push and an identical re-push', async () => {
    const name = '000000010000000000000011';
    await walFile(name, walSegment(name, SYSID));
    expect(await sh(archiveCommand(name))).toMatchObject({ code: ExitCode.ok, stderr: '' });
    expect(await sh(archiveCommand(name))).toMatchObject({ code: ExitCode.ok, stderr: '' });
  });

  it('exits 6 (conflict) for the same name with other content, and for WAL of another system', async () => {
    const name = '000000010000000000000011';
    await walFile(name, walSegment(name, SYSID));
    const conflict = await sh(archiveCommand(name));
    expect(conflict.code).toBe(ExitCode.conflict);
    expect(conflict.stderr).toMatch(
      /^pgkeep wal-push: WAL file 0+10+11 is already archived with different content/,
    );

    const foreign = '000000010000000000000012';
    await walFile(foreign, walSegment(foreign, SYSID + 1n));
    const result = await sh(archiveCommand(foreign));
    expect(result.code).toBe(ExitCode.conflict);
    expect(result.stderr).toMatch(/refusing WAL of another cluster/);
  });

  it('exits 4 (unavailable) with the repository directory gone, and 0 once it is back', async () => {
    const name = '000000010000000000000013';
    await walFile(name, walSegment(name, SYSID));
    await rename(h.repoDir, `${h.repoDir}.down`);
    let result: CliResult;
    try {
      result = await sh(archiveCommand(name));
    } finally {
      await rename(`${h.repoDir}.down`, h.repoDir);
    }
    expect(result.code).toBe(ExitCode.unavailable);
    expect(result.stderr).toMatch(/^pgkeep wal-push: .*repository directory .* does not exist/);
    expect((await sh(archiveCommand(name))).code).toBe(ExitCode.ok);
  });

  it('exits 3 (configuration) for an invalid recipient, validated by a chunk of its own bundle', async () => {
    const name = '000000010000000000000014';
    await walFile(name, walSegment(name, SYSID));
    const result = await sh(archiveCommand(name), { PGKEEP_RECIPIENTS: 'age1notarecipient' });
    expect(result.code).toBe(ExitCode.config);
    expect(result.stderr).toMatch(/^pgkeep wal-push: .*invalid recipient "age1notarecipient"/);
  });

  it('takes --config before the command name, as the CLI does', async () => {
    const missing = join(h.dir, 'no-such.yaml');
    const name = '000000010000000000000015';
    await walFile(name, walSegment(name, SYSID));
    const result = await sh(
      `${NODE} ${join(bundle, 'pgkeep.mjs')} --config=${missing} wal-push pg_wal/${name}`,
    );
    expect(result.code).toBe(ExitCode.config);
    expect(result.stderr).toContain(`config file ${missing} does not exist`);
  });

  it('exits 2 (usage) without a path, printing the usage line', async () => {
    const result = await sh(`PGKEEP_CONFIG=${h.configPath} ${NODE} ${join(bundle, 'pgkeep.mjs')} wal-push`);
    expect(result.code).toBe(ExitCode.usage);
    expect(result.stderr).toBe(
      'pgkeep wal-push: PATH is required: the WAL file to archive (%p in archive_command)\nusage: pgkeep wal-push PATH\n',
    );
  });
});

/**
 * No plaintext on disk, ever: a base backup of a cluster with a tablespace streams each archive
 * through named pipes, so a SIGKILL mid-backup leaves no byte of the data under the spool or
 * TMPDIR, and the next backup sweeps what the killed one left.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chown, lstat, mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PgCluster, startCluster } from '../../support/pg-cluster.ts';
import { NODE, PGKEEP_BUNDLE } from '../../support/pgkeep-cli.ts';
import { until } from '../../support/until.ts';
import { archiveSettings, type Harness, makeHarness } from '../wal/harness.ts';

const MARKER = `plaintext-marker-${randomBytes(8).toString('hex')}`;

let h: Harness;
let primary: PgCluster;
let agentTmp: string;

/** Every entry under `dir` (recursively), with its type. */
async function entriesUnder(dir: string): Promise<{ path: string; file: boolean; fifo: boolean }[]> {
  const out: { path: string; file: boolean; fifo: boolean }[] = [];
  for (const name of await readdir(dir, { recursive: true }).catch(() => [] as string[])) {
    const path = join(dir, name);
    const info = await lstat(path).catch(() => undefined);
    if (info) out.push({ path, file: info.isFile(), fifo: info.isFIFO() });
  }
  return out;
}

/** Regular files under `dirs` that contain the marker (pipes are never read: they hold nothing at rest). */
async function filesWithMarker(...dirs: string[]): Promise<string[]> {
  const found: string[] = [];
  for (const dir of dirs)
    for (const entry of await entriesUnder(dir))
      if (entry.file && (await readFile(entry.path)).includes(MARKER)) found.push(entry.path);
  return found;
}

beforeAll(async () => {
  h = await makeHarness('noplain');
  primary = await startCluster({ settings: archiveSettings(h) });
  const location = join(h.dir, 'ts');
  agentTmp = join(h.dir, 'tmp');
  await mkdir(location, { mode: 0o700 });
  await mkdir(agentTmp, { mode: 0o700 });
  if (h.user) for (const p of [location, agentTmp]) await chown(p, h.user.uid, h.user.gid);
  await primary.sql(`create tablespace extra location '${location}'`);
  // Enough data (~100 MB) that the backup is still streaming when it is killed.
  await primary.sql(
    `create table secret tablespace extra as
       select g, '${MARKER}' || md5(g::text) || repeat(md5((g * 3)::text), 2) as note
       from generate_series(1, 700000) g`,
  );
  await primary.sql(
    `create table secret_base as select g, '${MARKER}' as note from generate_series(1, 1000) g`,
  );
});

afterAll(async () => {
  await primary?.destroy();
  if (h) await rm(h.dir, { recursive: true, force: true });
});

describe('base backup with a tablespace', () => {
  it('leaves no plaintext byte under the spool or TMPDIR when SIGKILLed mid-backup, and the next run sweeps', async () => {
    const clusterSpool = join(h.spoolDir, h.cluster);
    const child = spawn(NODE, [PGKEEP_BUNDLE, 'basebackup'], {
      ...(h.user ?? {}),
      cwd: h.dir,
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        PGKEEP_CONFIG: h.configPath,
        TMPDIR: agentTmp,
        ...primary.env,
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const closed = new Promise<NodeJS.Signals | null>((resolve) =>
      child.once('close', (_c, s) => resolve(s)),
    );
    // Kill once ciphertext is being written to the repository: the archives are streaming.
    await until(
      'the backup to stream',
      async () => {
        const inRepo = await entriesUnder(join(h.repoDir, 'v1', h.cluster, 'base'));
        const sizes = await Promise.all(
          inRepo.filter((e) => e.file).map(async (e) => (await lstat(e.path)).size),
        );
        return sizes.some((size) => size > 1024 * 1024);
      },
      { timeoutMs: 60_000, pollMs: 20, detail: () => stderr },
    );
    expect(child.exitCode).toBeNull();
    const staged = await entriesUnder(clusterSpool);
    expect(staged.some((e) => e.fifo)).toBe(true);
    child.kill('SIGKILL');
    expect(await closed).toBe('SIGKILL');

    // What the killed run left: pipes and directories, no regular file in its staging directory.
    const left = (await entriesUnder(clusterSpool)).filter((e) => e.path.includes('/basebackup-'));
    expect(left.length).toBeGreaterThan(0);
    expect(left.filter((e) => e.file)).toEqual([]);
    expect(await filesWithMarker(h.spoolDir, agentTmp, h.repoDir)).toEqual([]);

    const again = await h.pgkeep(['basebackup', '--json'], { TMPDIR: agentTmp, ...primary.env });
    expect(again.stderr).toBe('');
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout).objects).toHaveLength(2);
    expect((await readdir(clusterSpool)).filter((n) => n.startsWith('basebackup-'))).toEqual([]);
    expect(await filesWithMarker(h.spoolDir, agentTmp, h.repoDir)).toEqual([]);
  });
});

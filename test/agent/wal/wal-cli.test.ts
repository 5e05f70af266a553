/**
 * PostgreSQL's archive_command / restore_command contract, through the bundled CLI run as the
 * server's user: exit codes, identical re-push, conflicts, missing files, an unreachable
 * repository (bounded, never "missing"), and an atomic %p.
 */
import { execFile, spawn } from 'node:child_process';
import { chown, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempPathFor } from '../../../agent/wal/fetch.ts';
import { restoreCommandLine, WalSpool } from '../../../agent/wal/spool.ts';
import { walFilePrefix } from '../../../core/keys.ts';
import { PGKEEP_BUNDLE } from '../../support/pgkeep-cli.ts';
import { walSegment } from '../../support/wal-segment.ts';
import { type Harness, loggedNode, makeHarness } from './harness.ts';

const SYSID = 7322222222222222222n;

function segment(name: string): Buffer {
  return walSegment(name, SYSID, 256 * 1024);
}

const execFileAsync = promisify(execFile);

let h: Harness;
let dataDir: string;
let firstContent: Buffer;

async function own(path: string): Promise<void> {
  if (h.user) await chown(path, h.user.uid, h.user.gid);
}

async function walFile(name: string, content: Buffer | string): Promise<string> {
  const path = join(dataDir, 'pg_wal', name);
  await writeFile(path, content);
  await own(path);
  return path;
}

function keysIn(name: string): Promise<string[]> {
  const dir = join(h.repoDir, walFilePrefix(h.cluster, name)).replace(/\/[^/]*-$/, '');
  return readdir(dir)
    .then((files) => files.filter((f) => f.startsWith(`${name}-`)))
    .catch(() => []);
}

beforeAll(async () => {
  h = await makeHarness('cli', { wal: { retrySeconds: 1 } });
  dataDir = join(h.dir, 'data');
  for (const d of [dataDir, join(dataDir, 'pg_wal'), join(dataDir, 'global')]) {
    await mkdir(d, { mode: 0o700 });
    await own(d);
  }
  const control = Buffer.alloc(8192);
  control.writeBigUInt64LE(SYSID, 0);
  await writeFile(join(dataDir, 'global', 'pg_control'), control);
});

afterAll(async () => {
  await rm(h.dir, { recursive: true, force: true });
});

describe('pgkeep wal-push / wal-fetch as PostgreSQL runs them', () => {
  it('exits 0 for a push and an identical re-push, 6 for different content, leaving the object as it was', async () => {
    const name = '0000000B0000000000000007';
    firstContent = segment(name);
    await walFile(name, firstContent);
    expect(await h.pgkeep(['wal-push', `pg_wal/${name}`], {}, dataDir)).toMatchObject({
      code: 0,
      stderr: '',
    });
    const [key] = await keysIn(name);
    expect(key).toBeDefined();
    expect(await h.pgkeep(['wal-push', `pg_wal/${name}`], {}, dataDir)).toMatchObject({ code: 0 });
    const before = await readdir(join(h.repoDir, 'v1', 'cli', 'wal', '0000000B'));
    await walFile(name, segment(name));
    const conflict = await h.pgkeep(['wal-push', `pg_wal/${name}`], {}, dataDir);
    expect(conflict.code).toBe(6);
    expect(conflict.stderr).toMatch(/already archived with different content/);
    expect(await readdir(join(h.repoDir, 'v1', 'cli', 'wal', '0000000B'))).toEqual(before);
  });

  it('fetches into %p atomically, and exits 1 at once for a missing segment or history file', async () => {
    const name = '0000000B0000000000000007';
    const restoreDir = join(h.dir, 'restore-cli');
    await mkdir(restoreDir);
    await own(restoreDir);
    const fetched = await h.pgkeep(['wal-fetch', name, 'RECOVERYXLOG'], {}, restoreDir);
    expect(fetched).toMatchObject({ code: 0, stderr: '' });
    // The stored version is the first one: the conflicting push changed nothing.
    expect((await readFile(join(restoreDir, 'RECOVERYXLOG'))).equals(firstContent)).toBe(true);
    expect((await readdir(restoreDir)).filter((f) => f.includes('tmp'))).toEqual([]);
    for (const missing of ['0000000B00000000000000F0', '0000000C.history']) {
      const started = Date.now();
      // With a 60 s retry budget, an answer within seconds proves "missing" is not retried.
      const result = await h.pgkeep(
        ['wal-fetch', missing, 'RECOVERYXLOG.2'],
        { PGKEEP_WAL_RETRY_SECONDS: '60' },
        restoreDir,
      );
      expect(result.code).toBe(1);
      expect(Date.now() - started).toBeLessThan(8000);
    }
  });

  it('with the repository down: wal-push fails (4) within the retry bound; wal-fetch never says "missing"', async () => {
    const name = '0000000B0000000000000008';
    await walFile(name, segment(name));
    await rename(h.repoDir, `${h.repoDir}.down`);
    try {
      let started = Date.now();
      const push = await h.pgkeep(['wal-push', `pg_wal/${name}`], {}, dataDir);
      expect(push.code).toBe(4);
      expect(push.stderr).toMatch(/unavailable|not found|missing/i);
      expect(Date.now() - started).toBeLessThan(8000);

      const restoreDir = join(h.dir, 'restore-down');
      await mkdir(restoreDir);
      await own(restoreDir);
      started = Date.now();
      // Archive recovery: exit above 125 so PostgreSQL stops instead of ending recovery early.
      expect((await h.pgkeep(['wal-fetch', '0000000B0000000000000007', 'X'], {}, restoreDir)).code).toBe(255);
      await writeFile(join(restoreDir, 'standby.signal'), '');
      // A standby retries on its own: an ordinary failure, but still not 1 ("missing").
      expect((await h.pgkeep(['wal-fetch', '0000000B0000000000000007', 'X'], {}, restoreDir)).code).toBe(4);
      expect(Date.now() - started).toBeLessThan(16000);
      expect(await readdir(restoreDir)).toEqual(['standby.signal']);
    } finally {
      await rename(`${h.repoDir}.down`, h.repoDir);
    }
    expect((await h.pgkeep(['wal-push', `pg_wal/${name}`], {}, dataDir)).code).toBe(0);
  });

  it('pushes and fetches .history, .partial and backup history files on a hexadecimal timeline', async () => {
    const files: [string, Buffer | string][] = [
      ['0000000C.history', '11\t0/8000000\tno recovery target specified\n'],
      ['0000000B0000000000000009.partial', segment('0000000B0000000000000009')],
      ['0000000B0000000000000009.00000028.backup', 'START WAL LOCATION: 0/9000028\n'],
    ];
    const restoreDir = join(h.dir, 'restore-kinds');
    await mkdir(restoreDir);
    await own(restoreDir);
    for (const [name, content] of files) {
      await walFile(name, content);
      expect(await h.pgkeep(['wal-push', `pg_wal/${name}`], {}, dataDir)).toMatchObject({
        code: 0,
        stderr: '',
      });
      expect(await h.pgkeep(['wal-fetch', name, 'out'], {}, restoreDir)).toMatchObject({ code: 0 });
      expect((await readFile(join(restoreDir, 'out'))).equals(Buffer.from(content))).toBe(true);
    }
  });

  it('restore_command takes prefetched segments without starting Node', async () => {
    const names = [
      '0000000B0000000000000030',
      '0000000B0000000000000031',
      '0000000B0000000000000032',
      '0000000B0000000000000033',
      '0000000B0000000000000034',
    ];
    const contents = new Map<string, Buffer>();
    for (const name of names) {
      contents.set(name, segment(name));
      await walFile(name, contents.get(name) as Buffer);
      expect((await h.pgkeep(['wal-push', `pg_wal/${name}`], {}, dataDir)).code).toBe(0);
    }
    const { line, log, restoreDir } = await loggedRestoreLine('prefetch');
    for (const name of names) {
      const command = line.replaceAll('%f', name).replaceAll('%p', 'pg_wal/RECOVERYXLOG');
      const code = await new Promise<number | null>((resolve) => {
        const child = spawn('sh', ['-c', command], { ...(h.user ?? {}), cwd: restoreDir, stdio: 'ignore' });
        child.once('close', resolve);
      });
      expect(code).toBe(0);
      expect(
        (await readFile(join(restoreDir, 'pg_wal', 'RECOVERYXLOG'))).equals(contents.get(name) as Buffer),
      ).toBe(true);
      // Give the background prefetcher a moment, as replaying a segment would.
      await new Promise((r) => setTimeout(r, 700));
    }
    const starts = (await readFile(log, 'utf8')).split('\n').filter((l) => l.includes('wal-fetch'));
    expect(starts.length).toBeLessThan(names.length);
    expect(starts[0]).toContain(names[0]);
  });
  it('wal-fetch starts a prefetcher for a segment the repository holds, and none for one it does not', async () => {
    const name = '0000000E0000000000000060';
    await walFile(name, segment(name));
    expect((await h.pgkeep(['wal-push', `pg_wal/${name}`], {}, dataDir)).code).toBe(0);
    const restoreDir = join(h.dir, 'restore-starts');
    await mkdir(restoreDir);
    await own(restoreDir);
    // A standby asks for the next segment every few seconds until it is archived: no Node start
    // beyond wal-fetch's own for that.
    const missingSpool = join(h.dir, 'spool-missing');
    await mkdir(missingSpool);
    await own(missingSpool);
    const env = (spoolDir: string) => ({ PGKEEP_SPOOL_DIR: spoolDir });
    const missing = await h.pgkeep(
      ['wal-fetch', '0000000E0000000000000061', 'RECOVERYXLOG'],
      env(missingSpool),
      restoreDir,
    );
    expect(missing.code).toBe(1);
    await expect(stat(new WalSpool(missingSpool, h.cluster, restoreDir).prefetchLockFile)).rejects.toThrow(
      /ENOENT/,
    );

    const foundSpool = join(h.dir, 'spool-found');
    await mkdir(foundSpool);
    await own(foundSpool);
    expect((await h.pgkeep(['wal-fetch', name, 'RECOVERYXLOG'], env(foundSpool), restoreDir)).code).toBe(0);
    const holder = await readFile(
      new WalSpool(foundSpool, h.cluster, restoreDir).prefetchLockFile,
      'utf8',
    ).catch(() => '');
    // The lock names the prefetcher, or is gone already when it found the end of the archive.
    expect(holder).toMatch(/^(\d+\n)?$/);
  });

  it('restore_command back to back, as a fast replay asks: only the first segment starts Node', async () => {
    const names = [
      '0000000C0000000000000040',
      '0000000C0000000000000041',
      '0000000C0000000000000042',
      '0000000C0000000000000043',
      '0000000C0000000000000044',
      '0000000C0000000000000045',
    ];
    const contents = new Map<string, Buffer>();
    for (const name of names) {
      contents.set(name, segment(name));
      await walFile(name, contents.get(name) as Buffer);
      expect((await h.pgkeep(['wal-push', `pg_wal/${name}`], {}, dataDir)).code).toBe(0);
    }
    const { line, log, restoreDir } = await loggedRestoreLine('back-to-back');
    for (const name of names) {
      expect(await runRestoreLine(line, name, restoreDir)).toBe(0);
      expect(
        (await readFile(join(restoreDir, 'pg_wal', 'RECOVERYXLOG'))).equals(contents.get(name) as Buffer),
      ).toBe(true);
    }
    // wal-fetch started the prefetcher and reserved the next segments for it before it returned:
    // the shell line waited for those instead of starting Node again.
    const starts = (await readFile(log, 'utf8')).split('\n').filter((l) => l.includes('wal-fetch'));
    expect(starts).toEqual([expect.stringContaining(names[0] as string)]);
  });

  it('restore_command waits for a segment a live prefetcher is writing, and not for a dead one', async () => {
    const names = ['0000000D0000000000000050', '0000000D0000000000000051'];
    for (const name of names) {
      await walFile(name, segment(name));
      expect((await h.pgkeep(['wal-push', `pg_wal/${name}`], {}, dataDir)).code).toBe(0);
    }
    const { line, log, restoreDir } = await loggedRestoreLine('wait');
    const spool = new WalSpool(h.spoolDir, h.cluster, restoreDir);
    await mkdir(spool.prefetchBootDir, { recursive: true });
    if (h.user) await execFileAsync('chown', ['-R', `${h.user.uid}:${h.user.gid}`, h.spoolDir]);
    // A stand-in for the prefetcher: a live process of the server's user named in the lock.
    const prefetcher = spawn('sleep', ['30'], { ...(h.user ?? {}) });
    try {
      await writeFile(spool.prefetchLockFile, `${prefetcher.pid}\n`);
      await own(spool.prefetchLockFile);
      const first = names[0] as string;
      await writeFile(tempPathFor(spool.prefetchPath(first), prefetcher.pid as number), '');
      await own(tempPathFor(spool.prefetchPath(first), prefetcher.pid as number));
      const delivered = Buffer.from('delivered by the prefetcher');
      const started = Date.now();
      const running = runRestoreLine(line, first, restoreDir);
      await new Promise((r) => setTimeout(r, 500));
      await writeFile(spool.prefetchPath(`${first}.part`), delivered);
      await own(spool.prefetchPath(`${first}.part`));
      await rename(spool.prefetchPath(`${first}.part`), spool.prefetchPath(first));
      await rm(tempPathFor(spool.prefetchPath(first), prefetcher.pid as number));
      expect(await running).toBe(0);
      expect(Date.now() - started).toBeGreaterThanOrEqual(500);
      expect((await readFile(join(restoreDir, 'pg_wal', 'RECOVERYXLOG'))).equals(delivered)).toBe(true);
      expect(await readFile(log, 'utf8')).toBe('');

      // The prefetcher died and left its temp file: the line does not wait; wal-fetch fetches.
      prefetcher.kill();
      await new Promise((resolve) => prefetcher.once('exit', resolve));
      const second = names[1] as string;
      await writeFile(tempPathFor(spool.prefetchPath(second), prefetcher.pid as number), '');
      await own(tempPathFor(spool.prefetchPath(second), prefetcher.pid as number));
      const again = Date.now();
      expect(await runRestoreLine(line, second, restoreDir)).toBe(0);
      expect(Date.now() - again).toBeLessThan(5_000);
      expect(await readFile(log, 'utf8')).toContain(`wal-fetch ${second}`);
    } finally {
      prefetcher.kill();
    }
  });
});

/** The restore_command line with a Node that logs each start, and a data directory to run it in. */
async function loggedRestoreLine(label: string): Promise<{ line: string; log: string; restoreDir: string }> {
  const { wrapper, log } = await loggedNode(h, `fetch-node-${label}`);
  const line = restoreCommandLine({
    nodePath: wrapper,
    bundlePath: PGKEEP_BUNDLE,
    spoolDir: h.spoolDir,
    cluster: h.cluster,
    configPath: h.configPath,
  });
  const restoreDir = join(h.dir, `restore-${label}`);
  await mkdir(join(restoreDir, 'pg_wal'), { recursive: true });
  await own(restoreDir);
  await own(join(restoreDir, 'pg_wal'));
  return { line, log, restoreDir };
}

/** Runs the restore_command line for `name` into pg_wal/RECOVERYXLOG, as the server's user; its exit code. */
function runRestoreLine(line: string, name: string, restoreDir: string): Promise<number | null> {
  const command = line.replaceAll('%f', name).replaceAll('%p', 'pg_wal/RECOVERYXLOG');
  return new Promise<number | null>((resolve) => {
    const child = spawn('sh', ['-c', command], { ...(h.user ?? {}), cwd: restoreDir, stdio: 'ignore' });
    child.once('close', resolve);
  });
}

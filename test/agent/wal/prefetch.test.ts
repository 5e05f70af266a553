/**
 * The WAL prefetcher against a real file:// repository and real spool files: what recovery can
 * take, what restore_command's shell line waits for (temp files named with the prefetcher's pid),
 * and that it ends, cleans up and never leaves a damaged file under a final name.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateX25519Identity, identityToRecipient } from 'age-encryption';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempPathFor } from '../../../agent/wal/fetch.ts';
import { notePrefetchWanted, prefetchAhead, reservePrefetch } from '../../../agent/wal/prefetch.ts';
import { pushWalFile, storedWalVersions } from '../../../agent/wal/push.ts';
import { WalSpool } from '../../../agent/wal/spool.ts';
import { FileStorage } from '../../../storage/file-storage.ts';
import type { Storage } from '../../../storage/storage.ts';
import { walSegment } from '../../support/wal-segment.ts';

const SYSID = 7333333333333333333n;
const RETRY = { deadlineMs: 1_000, initialDelayMs: 20, maxDelayMs: 100 };
const cluster = 'prefetch-test';

let work: string;
let storage: FileStorage;
let identities: string[];
let recipients: string[];
const contents = new Map<string, Buffer>();

/** Segments 1..`last` of `timeline` pushed to the repository. */
async function pushSegments(timeline: number, first: number, last: number): Promise<string[]> {
  const names: string[] = [];
  for (let n = first; n <= last; n++) {
    const name = `${timeline.toString(16).toUpperCase().padStart(8, '0')}00000000${n.toString(16).toUpperCase().padStart(8, '0')}`;
    const content = walSegment(name, SYSID, 16 * 1024);
    const path = join(work, 'data', 'pg_wal', name);
    await writeFile(path, content);
    await pushWalFile({ storage, cluster, recipients, path });
    contents.set(name, content);
    names.push(name);
  }
  return names;
}

let spoolCount = 0;
function newSpool(): WalSpool {
  spoolCount++;
  return new WalSpool(join(work, `spool-${spoolCount}`), cluster, join(work, 'pgdata'));
}

async function spoolFiles(spool: WalSpool): Promise<string[]> {
  return (await readdir(spool.prefetchBootDir).catch(() => [] as string[])).sort();
}

/** Takes `name` from the spool as restore_command does, waiting for it up to `timeoutMs`. */
async function take(spool: WalSpool, name: string, destination: string, timeoutMs = 10_000): Promise<Buffer> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await rename(spool.prefetchPath(name), destination);
      return await readFile(destination);
    } catch {
      if (Date.now() > deadline) throw new Error(`${name} never appeared in the spool`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }
}

/** A pid that no process has any more. */
async function deadPid(): Promise<number> {
  const child = spawn('true');
  await new Promise((resolve) => child.once('exit', resolve));
  return child.pid as number;
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pgkeep-prefetch-'));
  await mkdir(join(work, 'repo'));
  await mkdir(join(work, 'data', 'pg_wal'), { recursive: true });
  await mkdir(join(work, 'data', 'global'));
  const control = Buffer.alloc(8192);
  control.writeBigUInt64LE(SYSID, 0);
  await writeFile(join(work, 'data', 'global', 'pg_control'), control);
  storage = new FileStorage(join(work, 'repo'));
  const identity = await generateX25519Identity();
  identities = [identity];
  recipients = [await identityToRecipient(identity)];
  await pushSegments(1, 1, 8);
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('prefetchAhead', () => {
  it('keeps the window filled while recovery takes files, then ends at the end of the archive and cleans up', async () => {
    const spool = newSpool();
    const names = [...contents.keys()].filter((n) => n.startsWith('00000001'));
    const running = prefetchAhead({
      storage,
      cluster,
      identities,
      spool,
      after: names[0] as string,
      count: 3,
      parallelism: 2,
      retry: RETRY,
      pollMs: 5,
    });
    // Taken in order, as recovery does; the later ones only once the window moved past the first.
    for (const name of names.slice(1)) {
      const taken = await take(spool, name, join(work, 'RECOVERYXLOG'));
      expect(taken.equals(contents.get(name) as Buffer)).toBe(true);
    }
    expect(await running).toBe(names.length - 1);
    expect(await spoolFiles(spool)).toEqual([]);
    await expect(stat(spool.prefetchLockFile)).rejects.toThrow(/ENOENT/);
  });

  it('gives each queued or downloading segment a temp file named with its pid, and removes them when it stops', async () => {
    const spool = newSpool();
    const names = [...contents.keys()].filter((n) => n.startsWith('00000001'));
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    // A repository that answers only once released: a slow one.
    const slow: Storage = Object.assign(Object.create(storage) as Storage, {
      get: async (...args: Parameters<Storage['get']>) => {
        await gate;
        return storage.get(...args);
      },
    });
    const running = prefetchAhead({
      storage: slow,
      cluster,
      identities,
      spool,
      after: names[2] as string,
      count: 4,
      retry: RETRY,
      pollMs: 5,
      idleMs: 300,
    });
    const expected = names.slice(3, 7).map((n) => `${n}.pgkeep-${process.pid}.tmp`);
    for (let i = 0; i < 200 && (await spoolFiles(spool)).length < 4; i++)
      await new Promise((r) => setTimeout(r, 10));
    expect(await spoolFiles(spool)).toEqual(expected);
    expect((await readFile(spool.prefetchLockFile, 'utf8')).trim()).toBe(String(process.pid));
    release();
    // Nothing is taken: it stops once idle, keeping the complete files and no temp file.
    expect(await running).toBe(4);
    expect(await spoolFiles(spool)).toEqual(names.slice(3, 7));
    for (const name of names.slice(3, 7))
      expect((await readFile(spool.prefetchPath(name))).equals(contents.get(name) as Buffer)).toBe(true);
  });

  it('takes over from a prefetcher that died (its temp files and an earlier boot’s files go), and never from a live one', async () => {
    const spool = newSpool();
    const names = [...contents.keys()].filter((n) => n.startsWith('00000001'));
    await mkdir(spool.prefetchBootDir, { recursive: true });
    const dead = await deadPid();
    await writeFile(spool.prefetchLockFile, `${dead}\n`);
    await writeFile(tempPathFor(spool.prefetchPath(names[1] as string), dead), 'partial');
    const earlierBoot = join(spool.prefetchDir, '00000000-0000-0000-0000-000000000000');
    await mkdir(earlierBoot);
    await writeFile(join(earlierBoot, names[1] as string), 'not flushed before a crash');

    const live = spawn('sleep', ['30']);
    try {
      // wal-fetch reserved the next segments for the live process: it owns the lock, and this one
      // does nothing.
      expect(await reservePrefetch(spool, live.pid as number, names[0] as string, 2)).toBe(true);
      const reserved = (await spoolFiles(spool)).filter((f) => f.endsWith(`.pgkeep-${live.pid}.tmp`));
      expect(reserved).toHaveLength(2);
      const args = { storage, cluster, identities, spool, after: names[0] as string, count: 2, retry: RETRY };
      expect(await prefetchAhead({ ...args, pollMs: 5, idleMs: 200 })).toBe(0);
      expect(await spoolFiles(spool)).toContain(reserved[0]);
      live.kill();
      await new Promise((resolve) => live.once('exit', resolve));
      expect(await prefetchAhead({ ...args, pollMs: 5, idleMs: 200 })).toBe(2);
    } finally {
      live.kill();
    }
    expect(await spoolFiles(spool)).toEqual(names.slice(1, 3));
    expect(await readdir(spool.prefetchDir)).toEqual([expect.not.stringMatching(/^0{8}-/)]);
    expect(
      (await readFile(spool.prefetchPath(names[1] as string))).equals(
        contents.get(names[1] as string) as Buffer,
      ),
    ).toBe(true);
  });

  it('is not idle while its own downloads are under way: recovery waits for them, however slow the repository', async () => {
    const spool = newSpool();
    const names = [...contents.keys()].filter((n) => n.startsWith('00000001'));
    // Each download takes longer than the idle time (as any does on a machine under heavy load).
    const slow: Storage = Object.assign(Object.create(storage) as Storage, {
      get: async (...args: Parameters<Storage['get']>) => {
        await new Promise((r) => setTimeout(r, 250));
        return storage.get(...args);
      },
    });
    const args = { storage: slow, cluster, identities, spool, after: names[0] as string, count: 2 };
    expect(await prefetchAhead({ ...args, retry: RETRY, pollMs: 5, idleMs: 100 })).toBe(2);
    expect(await spoolFiles(spool)).toEqual(names.slice(1, 3));
  });

  it('follows recovery to another timeline that wal-fetch notes as wanted', async () => {
    const spool = newSpool();
    const tl1 = [...contents.keys()].filter((n) => n.startsWith('00000001'));
    const tl2 = await pushSegments(2, 5, 7);
    const running = prefetchAhead({
      storage,
      cluster,
      identities,
      spool,
      after: tl1[2] as string,
      count: 2,
      retry: RETRY,
      pollMs: 5,
      idleMs: 2_000,
    });
    expect(
      (await take(spool, tl1[3] as string, join(work, 'RECOVERYXLOG'))).equals(
        contents.get(tl1[3] as string) as Buffer,
      ),
    ).toBe(true);
    // Recovery switched to timeline 2 at segment 5 and asked wal-fetch for it.
    await notePrefetchWanted(spool, tl2[0] as string);
    for (const name of tl2.slice(1)) {
      expect((await take(spool, name, join(work, 'RECOVERYXLOG'))).equals(contents.get(name) as Buffer)).toBe(
        true,
      );
    }
    await running;
    expect((await spoolFiles(spool)).filter((f) => f.startsWith('00000001'))).toEqual([]);
  });

  it('rejects on a damaged object, leaving neither it nor a temp file in the spool', async () => {
    const spool = newSpool();
    const [name] = await pushSegments(3, 1, 1);
    const [version] = await storedWalVersions(storage, cluster, name as string);
    const path = join(work, 'repo', version?.key as string);
    const bytes = await readFile(path);
    bytes.writeUInt8(bytes.readUInt8(bytes.length - 100) ^ 1, bytes.length - 100);
    await writeFile(path, bytes);
    await expect(
      prefetchAhead({
        storage,
        cluster,
        identities,
        spool,
        after: '000000030000000000000000',
        count: 2,
        retry: RETRY,
        pollMs: 5,
      }),
    ).rejects.toThrow(/failed authentication/);
    expect(await spoolFiles(spool)).toEqual([]);
  });
});

import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { generateX25519Identity, identityToRecipient } from 'age-encryption';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fetchWalFile } from '../../../agent/wal/fetch.ts';
import { ForeignWalError, pushWalFile, WalConflictError } from '../../../agent/wal/push.ts';
import { clusterIdentityKey, walFilePrefix } from '../../../core/keys.ts';
import { FileStorage } from '../../../storage/file-storage.ts';
import { StorageUnavailableError } from '../../../storage/storage.ts';
import { walSegment } from '../../support/wal-segment.ts';

const execFileAsync = promisify(execFile);
const SYSID = 7311111111111111111n;
const FAST_RETRY = { deadlineMs: 1_500, initialDelayMs: 50, maxDelayMs: 200 };

/** A segment file with a valid long page header for its name, and random payload. */
function segment(name: string, sysid = SYSID): Buffer {
  return walSegment(name, sysid);
}

let work: string;
let repoDir: string;
let storage: FileStorage;
let pgWal: string;
let recipients: string[];
let identities: string[];
const cluster = 'wal-test';

async function writeWal(name: string, content: Buffer | string): Promise<string> {
  const path = join(pgWal, name);
  await writeFile(path, content);
  return path;
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pgkeep-wal-'));
  repoDir = join(work, 'repo');
  await mkdir(repoDir);
  storage = new FileStorage(repoDir);
  pgWal = join(work, 'data', 'pg_wal');
  await mkdir(pgWal, { recursive: true });
  await mkdir(join(work, 'data', 'global'));
  const control = Buffer.alloc(8192);
  control.writeBigUInt64LE(SYSID, 0);
  await writeFile(join(work, 'data', 'global', 'pg_control'), control);
  const identity = await generateX25519Identity();
  identities = [identity];
  recipients = [await identityToRecipient(identity)];
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('wal-push and wal-fetch', () => {
  it('stores a segment and fetches it back byte for byte, leaving no temp file beside %p', async () => {
    const name = '000000010000000000000003';
    const content = segment(name);
    const result = await pushWalFile({ storage, cluster, recipients, path: await writeWal(name, content) });
    expect(result.outcome).toBe('stored');
    expect(result.systemIdentifier).toBe(SYSID.toString());
    const dest = join(work, 'restore-1');
    await mkdir(dest);
    expect(
      await fetchWalFile({
        storage,
        cluster,
        identities,
        walFileName: name,
        destination: join(dest, 'RECOVERYXLOG'),
      }),
    ).toBe('fetched');
    expect((await readFile(join(dest, 'RECOVERYXLOG'))).equals(content)).toBe(true);
    expect(await readdir(dest)).toEqual(['RECOVERYXLOG']);
  });

  it('stores a segment the age and zstd programs read back (its 1 MiB pieces are zstd frames in order)', async () => {
    const name = '000000010000000000000005';
    const content = segment(name);
    const { key } = await pushWalFile({ storage, cluster, recipients, path: await writeWal(name, content) });
    const identityFile = join(work, 'identity.txt');
    await writeFile(identityFile, `${identities[0]}\n`, { mode: 0o600 });
    const object = join(repoDir, key);
    const { stdout } = await execFileAsync(
      'sh',
      ['-c', 'age -d -i "$1" "$2" | zstd -d -c', 'sh', identityFile, object],
      { encoding: 'buffer', maxBuffer: 64 * 1024 * 1024 },
    );
    expect(stdout.length).toBe(content.length);
    expect(stdout.equals(content)).toBe(true);
  });

  it('accepts an identical re-push and refuses different content, leaving the stored object as it was', async () => {
    const name = '000000010000000000000004';
    const path = await writeWal(name, segment(name));
    await pushWalFile({ storage, cluster, recipients, path });
    const before = await listKeys(name);
    expect((await pushWalFile({ storage, cluster, recipients, path })).outcome).toBe('already-stored');
    const bytesBefore = await readFile(join(repoDir, before[0]!));
    await writeWal(name, segment(name));
    await expect(pushWalFile({ storage, cluster, recipients, path })).rejects.toThrow(WalConflictError);
    expect(await listKeys(name)).toEqual(before);
    expect((await readFile(join(repoDir, before[0]!))).equals(bytesBefore)).toBe(true);
  });

  it('handles hexadecimal timelines, .partial, .history and backup history files', async () => {
    const names = ['0000000A00000000000000FF', '0000000A0000000100000000.partial'];
    for (const name of names) {
      await pushWalFile({
        storage,
        cluster,
        recipients,
        path: await writeWal(name, segment(name.slice(0, 24))),
      });
    }
    const history = '0000000A.history';
    await pushWalFile({
      storage,
      cluster,
      recipients,
      path: await writeWal(history, '9\t0/A000000\tno recovery target specified\n'),
    });
    const backup = '0000000A00000001000000A0.00000028.backup';
    await pushWalFile({
      storage,
      cluster,
      recipients,
      path: await writeWal(backup, 'START WAL LOCATION: 1/A0000028\n'),
    });
    expect(await listKeys('0000000A00000000000000FF')).toEqual([
      expect.stringMatching(/^v1\/wal-test\/wal\/0000000A\/0000000A00000000000000FF-[0-9a-f]{16}\.zst\.age$/),
    ]);
    for (const name of [...names, history, backup]) {
      const dest = join(work, `fetched-${name}`);
      expect(await fetchWalFile({ storage, cluster, identities, walFileName: name, destination: dest })).toBe(
        'fetched',
      );
      expect((await readFile(dest)).equals(await readFile(join(pgWal, name)))).toBe(true);
    }
  });

  it('refuses WAL whose header names another cluster, and a segment stored under the wrong name', async () => {
    const name = '000000010000000000000010';
    await expect(
      pushWalFile({ storage, cluster, recipients, path: await writeWal(name, segment(name, 42n)) }),
    ).rejects.toThrow(ForeignWalError);
    // Another host with another system identifier, same cluster name, no local pg_control to compare.
    const other = join(work, 'other');
    await mkdir(other);
    await writeFile(join(other, name), segment(name, 42n));
    await expect(pushWalFile({ storage, cluster, recipients, path: join(other, name) })).rejects.toThrow(
      /belongs to system identifier 7311111111111111111/,
    );
    expect(await listKeys(name)).toEqual([]);
    expect(
      JSON.parse(await readFile(join(repoDir, clusterIdentityKey(cluster)), 'utf8')).systemIdentifier,
    ).toBe(SYSID.toString());
    const renamed = '000000010000000000000011';
    await writeFile(join(pgWal, renamed), segment('000000010000000000000012'));
    await expect(pushWalFile({ storage, cluster, recipients, path: join(pgWal, renamed) })).rejects.toThrow(
      /not 000000010000000000000011/,
    );
  });

  it('reports a missing file, history files included, without retrying', async () => {
    const started = Date.now();
    for (const name of ['000000010000000000000099', '00000063.history']) {
      expect(
        await fetchWalFile({
          storage,
          cluster,
          identities,
          walFileName: name,
          destination: join(work, 'nope'),
        }),
      ).toBe('missing');
    }
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('fails within the retry deadline when the repository is down, and never reports "missing"', async () => {
    const name = '000000010000000000000020';
    const path = await writeWal(name, segment(name));
    await rename(repoDir, `${repoDir}.away`);
    try {
      const started = Date.now();
      await expect(pushWalFile({ storage, cluster, recipients, path, retry: FAST_RETRY })).rejects.toThrow(
        StorageUnavailableError,
      );
      await expect(
        fetchWalFile({
          storage,
          cluster,
          identities,
          walFileName: '000000010000000000000003',
          destination: join(work, 'x'),
          retry: FAST_RETRY,
        }),
      ).rejects.toThrow(StorageUnavailableError);
      expect(Date.now() - started).toBeLessThan(6_000);
    } finally {
      await rename(`${repoDir}.away`, repoDir);
    }
    expect((await pushWalFile({ storage, cluster, recipients, path, retry: FAST_RETRY })).outcome).toBe(
      'stored',
    );
  });
});

async function listKeys(walFileName: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const info of storage.list(walFilePrefix(cluster, walFileName))) keys.push(info.key);
  return keys;
}

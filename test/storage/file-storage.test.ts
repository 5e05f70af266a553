import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { afterAll, describe, expect, it } from 'vitest';
import { FileStorage } from '../../storage/file-storage.ts';
import { TEMP_NAME_PREFIX } from '../../storage/object-keys.ts';
import { openStorage, probeStorage } from '../../storage/open-storage.ts';
import { ObjectExistsError, RepositoryNotFoundError } from '../../storage/storage.ts';
import { describeStorageContract, listAll } from './storage-contract.ts';

const scratch = await mkdtemp(path.join(tmpdir(), 'pgkeep-file-storage-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

let count = 0;
async function freshRoot(): Promise<string> {
  count += 1;
  const root = path.join(scratch, `repo-${count}`);
  await mkdir(root);
  return root;
}

async function tempFiles(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true });
  return entries.filter((name) => path.basename(name).startsWith(TEMP_NAME_PREFIX));
}

describeStorageContract(
  'file',
  async () => {
    const root = await freshRoot();
    return { storage: openStorage(`file://${root}`), leftovers: () => tempFiles(root) };
  },
  // Past the driver's 32 MiB background flush: the round trip and the failure near the end cover it.
  { largeObjectBytes: 40 * 1024 * 1024 + 123 },
);

describe('file storage', () => {
  it('fails with RepositoryNotFoundError, naming the fix, when the root directory is missing (unmounted NAS)', async () => {
    const root = path.join(scratch, 'not-mounted');
    const storage = new FileStorage(root);
    await expect(storage.put('v1/x', Readable.from([Buffer.from('x')]))).rejects.toThrow(
      RepositoryNotFoundError,
    );
    await expect(storage.get('v1/x')).rejects.toThrow(RepositoryNotFoundError);
    await expect(storage.head('v1/x')).rejects.toThrow(RepositoryNotFoundError);
    await expect(storage.delete('v1/x')).rejects.toThrow(RepositoryNotFoundError);
    await expect(probeStorage(storage, 'v1/')).rejects.toThrow(
      `repository directory ${root} does not exist: create it`,
    );
    // The driver never creates the root: an unmounted NAS must not fill the local disk.
    await expect(readdir(root)).rejects.toThrow(/ENOENT/);
  });

  it('does not list temp files of writes in progress, and leaves none after a write', async () => {
    const root = await freshRoot();
    const storage = new FileStorage(root);
    await storage.put('v1/main/wal/a', Readable.from([Buffer.from('a')]));
    await writeFile(path.join(root, 'v1/main/wal', `${TEMP_NAME_PREFIX}in-flight`), 'partial');
    expect((await listAll(storage, '')).map((o) => o.key)).toEqual(['v1/main/wal/a']);
    await rm(path.join(root, 'v1/main/wal', `${TEMP_NAME_PREFIX}in-flight`));
    expect(await tempFiles(root)).toEqual([]);
  });

  it('lets exactly one of many racing create-only puts win', async () => {
    const storage = new FileStorage(await freshRoot());
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) =>
        storage.put('v1/main/wal/race', Readable.from([Buffer.from(`writer ${i}`.repeat(10_000))]), {
          ifAbsent: true,
        }),
      ),
    );
    const winners = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
    expect(winners).toHaveLength(1);
    for (const r of results) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(ObjectExistsError);
    expect(await text(await storage.get('v1/main/wal/race'))).toBe(`writer ${winners[0]}`.repeat(10_000));
  });

  it('maps keys to paths under the root and removes folders a delete empties', async () => {
    const root = await freshRoot();
    const storage = new FileStorage(root);
    await storage.put('v1/main/logical/db/b1/dump.zst.age', Readable.from([Buffer.from('d')]));
    expect(await readdir(path.join(root, 'v1/main/logical/db/b1'))).toEqual(['dump.zst.age']);
    await storage.delete('v1/main/logical/db/b1/dump.zst.age');
    expect(await readdir(root)).toEqual([]);
  });

  it('shows the repository as a file URL', () => {
    expect(openStorage('file:///var/backups/pgkeep/').displayUrl).toBe('file:///var/backups/pgkeep');
  });
});

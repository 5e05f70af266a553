import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { clusterPrefix, walFilePrefix, walKey, walPrefix } from '../../core/keys.ts';
import { FileStorage } from '../../storage/file-storage.ts';
import type { ByteRange, ListOptions, Storage } from '../../storage/storage.ts';
import { BundleIntegrityError, WalBundleStorage } from '../../storage/wal-bundles.ts';
import { putBundle } from '../support/wal-bundles.ts';
import { readAll } from './storage-contract.ts';

const scratch = await mkdtemp(path.join(tmpdir(), 'pgkeep-wal-bundles-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

const segment = (n: number) => `00000001000000000000000${n.toString(16).toUpperCase()}`;
const keyOf = (n: number) => walKey('c', segment(n), `${n}`.padStart(64, 'a'));

/** Counts the driver's requests, as a provider would bill them. */
class Counting implements Storage {
  readonly displayUrl: string;
  readonly inner: Storage;
  lists = 0;
  gets = 0;
  constructor(inner: Storage) {
    this.inner = inner;
    this.displayUrl = inner.displayUrl;
  }
  put = (key: string, body: Readable) => this.inner.put(key, body);
  head = (key: string) => this.inner.head(key);
  delete = (key: string) => this.inner.delete(key);
  get(key: string, range?: ByteRange) {
    this.gets += 1;
    return this.inner.get(key, range);
  }
  list(prefix: string, options?: ListOptions) {
    this.lists += 1;
    return this.inner.list(prefix, options);
  }
}

let repos = 0;
async function repository() {
  repos += 1;
  const root = path.join(scratch, `r${repos}`);
  const driver = new FileStorage(root);
  await import('node:fs/promises').then((fs) => fs.mkdir(root));
  const members = [1, 2, 3, 4].map((n) => ({ key: keyOf(n), bytes: randomBytes(1000 + n) }));
  const bundle = await putBundle(driver, 'c', members);
  // A segment stored as its own object (copied before bundling, or by the reconciliation).
  const single = { key: keyOf(6), bytes: randomBytes(500) };
  await driver.put(single.key, Readable.from([single.bytes]));
  const counting = new Counting(driver);
  return { root, driver, counting, storage: new WalBundleStorage(counting), members, bundle, single };
}

const keys = async (storage: Storage, prefix: string, options?: ListOptions) => {
  const found: string[] = [];
  for await (const o of storage.list(prefix, options)) found.push(o.key);
  return found;
};

describe('WAL bundles presented as per-segment objects', () => {
  it('lists members merged with real objects, in key order, under every prefix that holds them', async () => {
    const { storage, members, bundle, single } = await repository();
    const wal = [...members.map((m) => m.key), single.key];
    expect(await keys(storage, walPrefix('c'))).toEqual(wal);
    expect(await keys(storage, walPrefix('c', '00000001'))).toEqual(wal);
    expect(await keys(storage, clusterPrefix('c'))).toEqual([bundle, ...wal]);
    expect(await keys(storage, '')).toEqual([bundle, ...wal]);
    expect(await keys(storage, walPrefix('c'), { startAfter: members[1]?.key })).toEqual(wal.slice(2));
    // A range of one cluster from a key on, as a copy batch lists it.
    expect(await keys(storage, clusterPrefix('c'), { startAfter: members[0]?.key })).toEqual(wal.slice(1));
    expect(await keys(storage, walFilePrefix('c', segment(3)))).toEqual([members[2]?.key]);
    expect(await keys(storage, walFilePrefix('c', segment(5)))).toEqual([]);
    expect(await keys(storage, walFilePrefix('c', segment(6)))).toEqual([single.key]);
  });

  it('reads a member as the exact bytes stored in ingest, whole or a range, and heads it', async () => {
    const { storage, members } = await repository();
    const member = members[2] as { key: string; bytes: Buffer };
    expect(await readAll(await storage.get(member.key))).toEqual(member.bytes);
    expect(await readAll(await storage.get(member.key, { start: 10, end: 19 }))).toEqual(
      member.bytes.subarray(10, 20),
    );
    expect((await storage.head(member.key))?.sizeBytes).toBe(member.bytes.length);
    expect(await storage.head(keyOf(5))).toBeUndefined();
  });

  it('finds the bundle of one WAL file name with one listing and one index read, then reads from cache', async () => {
    const { storage, counting, members } = await repository();
    expect(await keys(storage, walFilePrefix('c', segment(2)))).toEqual([members[1]?.key]);
    // The real objects of the name, then the bundles after it; the tail of one bundle.
    expect({ lists: counting.lists, gets: counting.gets }).toEqual({ lists: 2, gets: 1 });
    await readAll(await storage.get(members[1]?.key as string));
    // The next name, as the prefetcher asks: its real objects only; the bundle is known.
    expect(await keys(storage, walFilePrefix('c', segment(3)))).toEqual([members[2]?.key]);
    await readAll(await storage.get(members[2]?.key as string));
    expect({ lists: counting.lists, gets: counting.gets }).toEqual({ lists: 3, gets: 3 });
    // A name past the bundle: looked up again.
    expect(await keys(storage, walFilePrefix('c', segment(5)))).toEqual([]);
    expect(counting.lists).toBe(5);
  });

  it('lists a member that is also a real object once, and a member repeated by a later bundle once', async () => {
    const { driver, storage, members, single } = await repository();
    await driver.put(members[0]?.key as string, Readable.from([members[0]?.bytes as Buffer]));
    // A run whose cursor was not committed bundles the same first segments again, and one more.
    const fifth = { key: keyOf(5), bytes: randomBytes(700) };
    await putBundle(driver, 'c', [...members, fifth]);
    expect(await keys(storage, walPrefix('c'))).toEqual([
      ...members.map((m) => m.key),
      fifth.key,
      single.key,
    ]);
    expect(await keys(storage, walFilePrefix('c', segment(5)))).toEqual([fifth.key]);
    expect(await keys(storage, walFilePrefix('c', segment(2)))).toEqual([members[1]?.key]);
  });

  it('refuses a member whose bytes were changed at the provider, naming the bundle and the fix', async () => {
    const { root, storage, members, bundle } = await repository();
    const file = path.join(root, ...bundle.split('/'));
    const bytes = await readFile(file);
    const at = (members[0]?.bytes.length as number) + 5;
    bytes[at] = (bytes[at] as number) ^ 0xff;
    await writeFile(file, bytes);
    await expect(readAll(await storage.get(members[0]?.key as string))).resolves.toEqual(members[0]?.bytes);
    const error = await storage.get(members[1]?.key as string).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BundleIntegrityError);
    expect((error as Error).message).toMatch(
      new RegExp(
        `WAL bundle ${bundle}.*member ${members[1]?.key}.*sha256.*changed at the target; restore from another target`,
      ),
    );
  });

  it('refuses a bundle whose index was changed, before reading any member', async () => {
    const { root, storage, bundle, members } = await repository();
    const file = path.join(root, ...bundle.split('/'));
    const bytes = await readFile(file);
    const at = bytes.indexOf(Buffer.from('"length":1002'));
    bytes.write('"length":1003', at);
    await writeFile(file, bytes);
    await expect(keys(storage, walPrefix('c'))).rejects.toThrow(
      /its index names members that digest to [0-9a-f]{16}, not to the/,
    );
    await expect(storage.get(members[0]?.key as string)).rejects.toBeInstanceOf(BundleIntegrityError);
  });

  it('refuses a bundle cut short at the provider', async () => {
    const { root, storage, bundle } = await repository();
    const file = path.join(root, ...bundle.split('/'));
    const bytes = await readFile(file);
    await writeFile(file, bytes.subarray(0, bytes.length - 3));
    await expect(keys(storage, walPrefix('c'))).rejects.toThrow(/does not end with a bundle locator/);
  });

  it('lists a bundle by the members a caller expects when they match its key, and reads its index when they do not', async () => {
    const { counting, members, single } = await repository();
    const expected = members.map((m) => ({ key: m.key, length: m.bytes.length }));
    const matching = new WalBundleStorage(counting, { expectedMembers: () => expected });
    const before = counting.gets;
    expect(await keys(matching, walPrefix('c'))).toEqual([...members.map((m) => m.key), single.key]);
    expect(counting.gets).toBe(before);
    // A segment that arrived late in the bundle's range is not in it: the index says what is.
    const late = { key: walKey('c', segment(2), 'f'.repeat(64)), length: 10 };
    const differing = new WalBundleStorage(counting, {
      expectedMembers: () => [...expected, late].sort((a, b) => (a.key < b.key ? -1 : 1)),
    });
    expect(await keys(differing, walPrefix('c'))).toEqual([...members.map((m) => m.key), single.key]);
    expect(counting.gets).toBe(before + 1);
  });

  it('with skipUnexpected, a bundle the caller expects no member of (pruned from ingest) is not read nor listed', async () => {
    const { counting, single } = await repository();
    const pruned = new WalBundleStorage(counting, { expectedMembers: () => [], skipUnexpected: true });
    const before = counting.gets;
    expect(await keys(pruned, walPrefix('c'))).toEqual([single.key]);
    expect(counting.gets).toBe(before);
    // Without the option, the index is read to list the members.
    const plain = new WalBundleStorage(counting, { expectedMembers: () => [] });
    expect(await keys(plain, walPrefix('c'))).toHaveLength(5);
    expect(counting.gets).toBe(before + 1);
  });

  it('reads ahead: the members after the one asked for come with the same GET, each checked, each once', async () => {
    const { root, counting, members, bundle } = await repository();
    const storage = new WalBundleStorage(counting, { readAheadBytes: 1024 * 1024 });
    expect(await keys(storage, walPrefix('c'))).toHaveLength(5);
    const before = counting.gets;
    // As the prefetcher asks: several at once, then the rest.
    const [first, second] = await Promise.all(
      members.slice(0, 2).map(async (m) => readAll(await storage.get(m.key))),
    );
    expect([first, second]).toEqual([members[0]?.bytes, members[1]?.bytes]);
    for (const m of members.slice(2)) expect(await readAll(await storage.get(m.key))).toEqual(m.bytes);
    expect(counting.gets - before).toBe(1);
    // Asked again: read again (nothing is kept twice).
    expect(await readAll(await storage.get(members[3]?.key as string))).toEqual(members[3]?.bytes);
    expect(counting.gets - before).toBe(2);

    // A member changed at the provider fails when it is asked for, not its neighbours.
    const file = path.join(root, ...bundle.split('/'));
    const bytes = await readFile(file);
    const at = (members[0]?.bytes.length as number) + 5;
    bytes[at] = (bytes[at] as number) ^ 0xff;
    await writeFile(file, bytes);
    const fresh = new WalBundleStorage(counting, { readAheadBytes: 1024 * 1024 });
    expect(await keys(fresh, walPrefix('c'))).toHaveLength(5);
    expect(await readAll(await fresh.get(members[0]?.key as string))).toEqual(members[0]?.bytes);
    await expect(fresh.get(members[1]?.key as string)).rejects.toBeInstanceOf(BundleIntegrityError);
    expect(await readAll(await fresh.get(members[2]?.key as string))).toEqual(members[2]?.bytes);
  });
});

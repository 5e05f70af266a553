/**
 * The contract every storage driver passes (storage/storage.ts). A driver's test file calls
 * {@link describeStorageContract} with a factory for a fresh, empty repository.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { describe, expect, it } from 'vitest';
import { compareKeys } from '../../storage/object-keys.ts';
import { probeStorage } from '../../storage/open-storage.ts';
import {
  ObjectExistsError,
  type ObjectInfo,
  ObjectNotFoundError,
  type Storage,
  StorageError,
} from '../../storage/storage.ts';

export interface ContractSubject {
  /** A fresh, empty repository. */
  readonly storage: Storage;
  /** Leftovers a failed put must not leave behind (temp files, open multipart uploads). */
  leftovers(): Promise<string[]>;
}

export interface ContractOptions {
  /** A size that takes several parts (or write calls) to store. */
  readonly largeObjectBytes: number;
}

/** Streams `data` in 64 KiB chunks; with `failAfterBytes`, errors with `error` once that much has been read. */
export function chunkedStream(
  data: Buffer,
  failAfterBytes?: number,
  error = new Error('body failed'),
): Readable {
  let offset = 0;
  return new Readable({
    read() {
      if (failAfterBytes !== undefined && offset >= failAfterBytes) {
        this.destroy(error);
        return;
      }
      if (offset >= data.length) {
        this.push(null);
        return;
      }
      const end = Math.min(offset + 64 * 1024, data.length, failAfterBytes ?? Number.POSITIVE_INFINITY);
      this.push(data.subarray(offset, end));
      offset = end;
    },
  });
}

export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

export async function listAll(storage: Storage, prefix: string): Promise<ObjectInfo[]> {
  const found: ObjectInfo[] = [];
  for await (const info of storage.list(prefix)) found.push(info);
  return found;
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

export function describeStorageContract(
  driver: string,
  subject: () => Promise<ContractSubject>,
  options: ContractOptions,
): void {
  describe(`${driver} storage contract`, () => {
    it('round-trips bytes, and head reports size and time', async () => {
      const { storage } = await subject();
      const before = Date.now();
      const data = Buffer.from('hello pgkeep\n');
      await storage.put('v1/main/manifests/a.json', Readable.from([data]));
      expect(await readAll(await storage.get('v1/main/manifests/a.json'))).toEqual(data);
      const info = await storage.head('v1/main/manifests/a.json');
      expect(info?.key).toBe('v1/main/manifests/a.json');
      expect(info?.sizeBytes).toBe(data.length);
      // Second-granular clocks (S3 Last-Modified) may round down.
      expect(info?.lastModified.getTime()).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000 - 1000);
    });

    it('round-trips an empty object', async () => {
      const { storage } = await subject();
      await storage.put('v1/main/empty', Readable.from([]));
      expect((await readAll(await storage.get('v1/main/empty'))).length).toBe(0);
      expect((await storage.head('v1/main/empty'))?.sizeBytes).toBe(0);
    });

    it('stores a body of announced length, and refuses one of another length, storing nothing', async () => {
      const { storage } = await subject();
      const data = randomBytes(options.largeObjectBytes);
      await storage.put('v1/main/sized/whole', chunkedStream(data), { sizeBytes: data.length });
      expect((await readAll(await storage.get('v1/main/sized/whole'))).equals(data)).toBe(true);
      for (const [name, announced] of [
        ['short', data.length + 1],
        ['long', data.length - 1],
      ] as const) {
        const key = `v1/main/sized/${name}`;
        await expect(storage.put(key, chunkedStream(data), { sizeBytes: announced })).rejects.toThrow(
          new RegExp(`${key} is not the ${announced} bytes announced`),
        );
        expect(await storage.head(key)).toBeUndefined();
      }
    });

    it('round-trips a stream that takes several parts', async () => {
      const { storage, leftovers } = await subject();
      const data = randomBytes(options.largeObjectBytes);
      await storage.put('v1/main/base/b1/base.tar.zst.age', chunkedStream(data));
      const back = await readAll(await storage.get('v1/main/base/b1/base.tar.zst.age'));
      expect(back.length).toBe(data.length);
      expect(sha256(back)).toBe(sha256(data));
      expect((await storage.head('v1/main/base/b1/base.tar.zst.age'))?.sizeBytes).toBe(data.length);
      expect(await leftovers()).toEqual([]);
    });

    it('reads inclusive byte ranges, clipped at the end', async () => {
      const { storage } = await subject();
      const data = Buffer.from('0123456789abcdef');
      await storage.put('k/range', Readable.from([data]));
      expect(await text(await storage.get('k/range', { start: 0, end: 0 }))).toBe('0');
      expect(await text(await storage.get('k/range', { start: 3, end: 6 }))).toBe('3456');
      expect(await text(await storage.get('k/range', { start: 10, end: 15 }))).toBe('abcdef');
      expect(await text(await storage.get('k/range', { start: 14, end: 100 }))).toBe('ef');
    });

    it('rejects a range that starts past the end as an error, not as a missing object', async () => {
      const { storage } = await subject();
      await storage.put('k/short', Readable.from([Buffer.from('abc')]));
      const error = await storage.get('k/short', { start: 3, end: 10 }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(StorageError);
      expect(error).not.toBeInstanceOf(ObjectNotFoundError);
      await expect(storage.get('k/short', { start: 2, end: 1 })).rejects.toThrow(RangeError);
      await expect(storage.get('k/short', { start: -1, end: 1 })).rejects.toThrow(RangeError);
    });

    it('reports a missing object: head → undefined, get → ObjectNotFoundError', async () => {
      const { storage } = await subject();
      expect(await storage.head('v1/main/wal/missing')).toBeUndefined();
      const error = await storage.get('v1/main/wal/missing').catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ObjectNotFoundError);
      expect((error as ObjectNotFoundError).key).toBe('v1/main/wal/missing');
      await expect(storage.get('v1/main/wal/missing', { start: 0, end: 9 })).rejects.toThrow(
        ObjectNotFoundError,
      );
    });

    it('lists keys under a prefix in ascending (UTF-8 byte) order with sizes', async () => {
      const { storage } = await subject();
      const keys = [
        'v1/c/wal/00000001/000000010000000000000002',
        'v1/c/wal/00000001/000000010000000000000001',
        'v1/c/wal/00000002.history',
        'v1/c/wal.x',
        'v1/c/manifests/b.json',
        'v1/c/base/20250101T000000Z-ab12/base.tar',
        'v1/c-2/x',
        'v1/c/z\u00e9',
        'v1/c/z\u{1f600}',
        'v1/c/z\uff5e',
        'v1/d',
      ];
      for (const [index, key] of keys.entries()) {
        await storage.put(key, Readable.from([Buffer.alloc(index + 1, 1)]));
      }
      const all = await listAll(storage, '');
      expect(all.map((o) => o.key)).toEqual([...keys].sort(compareKeys));
      expect(all.find((o) => o.key === 'v1/d')?.sizeBytes).toBe(keys.length);
      expect((await listAll(storage, 'v1/c/')).map((o) => o.key)).toEqual(
        keys.filter((k) => k.startsWith('v1/c/')).sort(compareKeys),
      );
      expect((await listAll(storage, 'v1/c/wal/00000001/0000000100')).map((o) => o.key)).toEqual([
        'v1/c/wal/00000001/000000010000000000000001',
        'v1/c/wal/00000001/000000010000000000000002',
      ]);
      expect((await listAll(storage, 'v1/c/wal')).map((o) => o.key)).toEqual([
        'v1/c/wal.x',
        'v1/c/wal/00000001/000000010000000000000001',
        'v1/c/wal/00000001/000000010000000000000002',
        'v1/c/wal/00000002.history',
      ]);
      expect(await listAll(storage, 'v1/nothing/')).toEqual([]);
    });

    it('lists more keys than one page holds', async () => {
      const { storage } = await subject();
      const keys = Array.from({ length: 1005 }, (_, i) => `v1/c/wal/00000001/${String(i).padStart(24, '0')}`);
      for (let i = 0; i < keys.length; i += 50) {
        await Promise.all(keys.slice(i, i + 50).map((k) => storage.put(k, Readable.from([Buffer.from(k)]))));
      }
      expect((await listAll(storage, 'v1/c/wal/')).map((o) => o.key)).toEqual(keys);
    });

    it('lists only the keys after startAfter, over more than one page', async () => {
      const { storage } = await subject();
      const keys = Array.from({ length: 1005 }, (_, i) => `v1/c/wal/00000001/${String(i).padStart(24, '0')}`);
      for (let i = 0; i < keys.length; i += 50) {
        await Promise.all(keys.slice(i, i + 50).map((k) => storage.put(k, Readable.from([Buffer.from(k)]))));
      }
      const listAfter = async (startAfter: string) => {
        const found: string[] = [];
        for await (const o of storage.list('v1/c/wal/', { startAfter })) found.push(o.key);
        return found;
      };
      expect(await listAfter(keys[2] as string)).toEqual(keys.slice(3));
      // A startAfter that is not a key: everything that sorts after it.
      expect(await listAfter(`${keys[1003]}-`)).toEqual([keys[1004]]);
      expect(await listAfter('v1/c/wal/00000001/')).toEqual(keys);
      expect(await listAfter('v1/c/wal/00000002/')).toEqual([]);
    });

    it('replaces an object on a plain put', async () => {
      const { storage } = await subject();
      await storage.put('k/x', Readable.from([Buffer.from('one')]));
      await storage.put('k/x', Readable.from([Buffer.from('two!')]));
      expect(await text(await storage.get('k/x'))).toBe('two!');
    });

    it('creates with ifAbsent, and refuses to replace an existing object (body consumed, object unchanged)', async () => {
      const { storage, leftovers } = await subject();
      await storage.put('v1/main/wal/seg', Readable.from([Buffer.from('first')]), { ifAbsent: true });
      const body = chunkedStream(Buffer.alloc(300 * 1024, 7));
      const error = await storage.put('v1/main/wal/seg', body, { ifAbsent: true }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ObjectExistsError);
      expect((error as ObjectExistsError).key).toBe('v1/main/wal/seg');
      expect(body.readableEnded || body.destroyed).toBe(true);
      expect(await text(await storage.get('v1/main/wal/seg'))).toBe('first');
      expect((await listAll(storage, '')).map((o) => o.key)).toEqual(['v1/main/wal/seg']);
      expect(await leftovers()).toEqual([]);
    });

    it('rejects with the body error and leaves nothing when the body fails early', async () => {
      const { storage, leftovers } = await subject();
      const failure = new Error('pg_dump exited with status 1');
      const put = storage.put(
        'v1/main/logical/db/x/dump',
        chunkedStream(randomBytes(1024 * 1024), 100_000, failure),
      );
      await expect(put).rejects.toBe(failure);
      expect(await storage.head('v1/main/logical/db/x/dump')).toBeUndefined();
      expect(await listAll(storage, '')).toEqual([]);
      expect(await leftovers()).toEqual([]);
    });

    it('rejects with the body error and leaves nothing when the body fails after several parts', async () => {
      const { storage, leftovers } = await subject();
      const failure = new Error('encryption failed');
      const data = randomBytes(options.largeObjectBytes);
      const put = storage.put(
        'v1/main/base/b2/base.tar',
        chunkedStream(data, data.length - 100_000, failure),
        {
          ifAbsent: true,
        },
      );
      await expect(put).rejects.toBe(failure);
      expect(await storage.head('v1/main/base/b2/base.tar')).toBeUndefined();
      expect(await listAll(storage, '')).toEqual([]);
      expect(await leftovers()).toEqual([]);
    });

    it('keeps the old object when a replacing put fails', async () => {
      const { storage } = await subject();
      await storage.put('k/keep', Readable.from([Buffer.from('old')]));
      const failure = new Error('boom');
      await expect(storage.put('k/keep', chunkedStream(randomBytes(200_000), 70_000, failure))).rejects.toBe(
        failure,
      );
      expect(await text(await storage.get('k/keep'))).toBe('old');
    });

    it('deletes, and deleting a missing object is not an error', async () => {
      const { storage } = await subject();
      await storage.put('v1/main/base/b3/base.tar', Readable.from([Buffer.from('x')]));
      await storage.put('v1/main/base/b4/base.tar', Readable.from([Buffer.from('y')]));
      await storage.delete('v1/main/base/b3/base.tar');
      await storage.delete('v1/main/base/b3/base.tar');
      await storage.delete('v1/main/never/was');
      expect(await storage.head('v1/main/base/b3/base.tar')).toBeUndefined();
      expect((await listAll(storage, '')).map((o) => o.key)).toEqual(['v1/main/base/b4/base.tar']);
      // The emptied "folder" can be written again.
      await storage.put('v1/main/base/b3/base.tar', Readable.from([Buffer.from('z')]));
      expect(await text(await storage.get('v1/main/base/b3/base.tar'))).toBe('z');
    });

    it('stores concurrent puts of different keys', async () => {
      const { storage } = await subject();
      const keys = Array.from({ length: 12 }, (_, i) => `v1/main/wal/00000001/seg${i}`);
      await Promise.all(keys.map((k) => storage.put(k, chunkedStream(Buffer.from(k.repeat(1000))))));
      for (const k of keys) expect(await text(await storage.get(k))).toBe(k.repeat(1000));
    });

    it('rejects invalid keys and prefixes before touching anything', async () => {
      const { storage } = await subject();
      for (const key of [
        '',
        '/abs',
        'a//b',
        'a/../b',
        '../x',
        'a/./b',
        'a/',
        '.pgkeep-tmp-1',
        'a/.pgkeep-tmp-x',
        'a\0b',
      ]) {
        await expect(storage.put(key, Readable.from([Buffer.from('x')])), key).rejects.toThrow(
          /invalid object key/,
        );
        await expect(storage.get(key), key).rejects.toThrow(/invalid object key/);
        await expect(storage.head(key), key).rejects.toThrow(/invalid object key/);
        await expect(storage.delete(key), key).rejects.toThrow(/invalid object key/);
      }
      await expect(listAll(storage, '../')).rejects.toThrow(/invalid list prefix/);
      await expect(listAll(storage, '/x')).rejects.toThrow(/invalid list prefix/);
      expect(await listAll(storage, '')).toEqual([]);
    });

    it('answers a probe, naming the first key', async () => {
      const { storage } = await subject();
      expect(await probeStorage(storage, 'v1/main/')).toEqual({ displayUrl: storage.displayUrl });
      await storage.put('v1/main/manifests/m.json', Readable.from([Buffer.from('{}')]));
      expect(await probeStorage(storage, 'v1/main/')).toEqual({
        displayUrl: storage.displayUrl,
        firstKey: 'v1/main/manifests/m.json',
      });
    });
  });
}

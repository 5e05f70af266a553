import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable, type Writable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import * as age from 'age-encryption';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkedOutput, exitOf } from '../../agent/child-process.ts';
import { restoreObject, storeObject, storeProduced } from '../../agent/object-store.ts';
import { zstdProgram } from '../../agent/zstd-compress.ts';
import { FileStorage } from '../../storage/file-storage.ts';
import { ObjectExistsError, type Storage, StorageError } from '../../storage/storage.ts';

let dir: string;
let storage: FileStorage;
let identity: string;
let recipient: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pgkeep-object-store-'));
  storage = new FileStorage(dir);
  identity = await age.generateX25519Identity();
  recipient = await age.identityToRecipient(identity);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

// Half random, half repetitive: compressible like real data, different every run.
const content = () => Buffer.concat([randomBytes(300_000), Buffer.alloc(700_000, 'pgkeep ')]);

async function readBack(key: string): Promise<Buffer> {
  const out = new PassThrough();
  const [, plaintext] = await Promise.all([
    restoreObject({ storage, key, identities: [identity] }, out),
    buffer(out),
  ]);
  return plaintext;
}

describe('storeObject compression', () => {
  it('finds the zstd program that .ci/run installs', () => {
    expect(zstdProgram()).toMatch(/\/zstd$/);
  });

  it.each([
    ['the zstd program', undefined],
    ['the built-in codec', null],
  ])('round-trips through %s, compressing', async (_name, program) => {
    const plaintext = content();
    const key = `v1/t/${program === null ? 'builtin' : 'cli'}.zst.age`;
    const stored = await storeObject({
      storage,
      key,
      source: Readable.from([plaintext]),
      recipients: [recipient],
      zstdProgram: program,
    });
    expect(stored.plaintextSizeBytes).toBe(plaintext.length);
    expect(stored.sizeBytes).toBeLessThan(plaintext.length / 2);
    expect((await readBack(key)).equals(plaintext)).toBe(true);
  });

  it('fails and stores nothing when the zstd program fails', async () => {
    await expect(
      storeObject({
        storage,
        key: 'v1/t/failed.zst.age',
        source: Readable.from([content()]),
        recipients: [recipient],
        zstdProgram: '/bin/false',
      }),
    ).rejects.toThrow(/zstd exited with code 1/);
    expect(await readdir(join(dir, 'v1/t'))).not.toContain('failed.zst.age');
  });
});

describe('what a stored stream records of its plaintext', () => {
  it('records the plaintext size but no plaintext hash, and still checks the size on reading', async () => {
    const plaintext = content();
    const key = 'v1/t/unhashed.zst.age';
    const stored = await storeObject({
      storage,
      key,
      source: Readable.from([plaintext]),
      recipients: [recipient],
    });
    // A hash of the plaintext in a readable manifest would let anyone confirm a guessed plaintext.
    expect(stored).not.toHaveProperty('plaintextSha256');
    const read = (expected: Parameters<typeof restoreObject>[0]['expected']) =>
      restoreObject({ storage, key, identities: [identity], expected }, new PassThrough().resume());
    await expect(read({ ...stored })).resolves.toBeUndefined();
    await expect(read({ ...stored, plaintextSizeBytes: stored.plaintextSizeBytes + 1 })).rejects.toThrow(
      `object ${key} failed verification: plaintext: ${plaintext.length} bytes, expected ${plaintext.length + 1}`,
    );
    // Manifests of older agents carry the plaintext's sha256; it is still checked.
    await expect(read({ ...stored, plaintextSha256: 'a'.repeat(64) })).rejects.toThrow(
      /plaintext: sha256 [0-9a-f]{64}, expected a{64}/,
    );
  });
});

describe('storeProduced: a producer writing straight into zstd', () => {
  /** `sh -c script` as the producer: into zstd's stdin, or (no zstd) through a checked pipe. */
  const shell = (script: string) => ({
    into: (stdout: Writable) => {
      const child = spawn('sh', ['-c', script], { stdio: ['ignore', stdout, 'ignore'] });
      const done = exitOf(child).then(({ code }) => {
        if (code !== 0) throw new Error(`producer exited with code ${code}`);
      });
      return { done, stop: () => child.kill() };
    },
    pipe: () => {
      const child = spawn('sh', ['-c', script], { stdio: ['ignore', 'pipe', 'pipe'] });
      return checkedOutput(child, (detail) => new Error(`producer ${detail}`));
    },
  });
  const file = join(tmpdir(), `pgkeep-produced-${process.pid}`);
  afterAll(() => rm(file, { force: true }));

  it('records the exact plaintext size zstd read, and reads back byte for byte', async () => {
    const plaintext = content();
    await writeFile(file, plaintext);
    const key = 'v1/t/produced.zst.age';
    const stored = await storeProduced({
      storage,
      key,
      produce: shell(`cat '${file}'; cat '${file}'`),
      recipients: [recipient],
    });
    expect(stored.plaintextSizeBytes).toBe(2 * plaintext.length);
    expect(stored.sizeBytes).toBeLessThan(plaintext.length);
    expect((await readBack(key)).equals(Buffer.concat([plaintext, plaintext]))).toBe(true);
  });

  it.each([0, 1, 1000])(
    'records a small plaintext exactly too (%i bytes; zstd pads the count)',
    async (n) => {
      const key = `v1/t/produced-${n}.zst.age`;
      const stored = await storeProduced({
        storage,
        key,
        produce: shell(`head -c ${n} /dev/zero`),
        recipients: [recipient],
      });
      expect(stored.plaintextSizeBytes).toBe(n);
      expect((await readBack(key)).length).toBe(n);
    },
  );

  it('fails and stores nothing when the producer fails after writing', async () => {
    await expect(
      storeProduced({
        storage,
        key: 'v1/t/producer-failed.zst.age',
        produce: shell('head -c 3000000 /dev/urandom; exit 3'),
        recipients: [recipient],
      }),
    ).rejects.toThrow(/producer exited with code 3/);
    expect(await readdir(join(dir, 'v1/t'))).not.toContain('producer-failed.zst.age');
  });

  it("fails with the driver's refusal of an existing key, and leaves the first object as it was", async () => {
    const plaintext = content();
    await writeFile(file, plaintext);
    const key = 'v1/t/produced-twice.zst.age';
    const first = await storeProduced({
      storage,
      key,
      produce: shell(`cat '${file}'`),
      recipients: [recipient],
    });
    await expect(
      storeProduced({ storage, key, produce: shell(`cat '${file}'`), recipients: [recipient] }),
    ).rejects.toBeInstanceOf(ObjectExistsError);
    expect((await storage.head(key))?.sizeBytes).toBe(first.sizeBytes);
    expect((await readBack(key)).equals(plaintext)).toBe(true);
  });

  it("fails with the driver's error, and stops the producer, when the driver gives up without reading", async () => {
    // Real drivers read their body to the end even when they refuse it; one that does not must not
    // leave the producer, zstd and the encryption blocked on a full pipe.
    const refusing: Storage = Object.assign(Object.create(storage) as FileStorage, {
      put: async () => {
        throw new StorageError('write refused by the test');
      },
    });
    const started = performance.now();
    await expect(
      storeProduced({
        storage: refusing,
        key: 'v1/t/refused.zst.age',
        produce: shell('while :; do head -c 1000000 /dev/urandom; done'),
        recipients: [recipient],
      }),
    ).rejects.toThrow('write refused by the test');
    expect(performance.now() - started).toBeLessThan(10_000);
  });

  it('completes the object only once completeAfter resolves, and not at all if it rejects', async () => {
    const key = 'v1/t/gated.zst.age';
    let release = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const stored = storeProduced({
      storage,
      key,
      produce: shell('head -c 1000000 /dev/urandom'),
      recipients: [recipient],
      completeAfter: gate,
    });
    await new Promise((resolve) => setTimeout(resolve, 500));
    // The producer has long finished; the object is still not there.
    expect(await storage.head(key)).toBeUndefined();
    release();
    expect((await stored).plaintextSizeBytes).toBe(1_000_000);
    expect((await readBack(key)).length).toBe(1_000_000);

    const refused = new Error('the server facts could not be read');
    await expect(
      storeProduced({
        storage,
        key: 'v1/t/gate-refused.zst.age',
        produce: shell('head -c 1000000 /dev/urandom'),
        recipients: [recipient],
        completeAfter: new Promise((_resolve, reject) => setTimeout(() => reject(refused), 300)),
      }),
    ).rejects.toBe(refused);
    expect(await readdir(join(dir, 'v1/t'))).not.toContain('gate-refused.zst.age');
    expect((await readdir(join(dir, 'v1/t'))).filter((name) => name.startsWith('.pgkeep-tmp'))).toEqual([]);
  });

  it('stops the producer and stores nothing when aborted', async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error('another dump failed')), 300);
    const started = performance.now();
    await expect(
      storeProduced({
        storage,
        key: 'v1/t/aborted.zst.age',
        produce: shell('while :; do head -c 1000000 /dev/urandom; done'),
        recipients: [recipient],
        signal: controller.signal,
      }),
    ).rejects.toThrow(/abort/i);
    expect(performance.now() - started).toBeLessThan(10_000);
    expect(await readdir(join(dir, 'v1/t'))).not.toContain('aborted.zst.age');
  });
});

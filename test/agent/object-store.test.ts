import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import * as age from 'age-encryption';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { restoreObject, storeObject } from '../../agent/object-store.ts';
import { zstdProgram } from '../../agent/zstd-compress.ts';
import { FileStorage } from '../../storage/file-storage.ts';

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

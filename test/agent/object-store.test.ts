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

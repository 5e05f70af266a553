/**
 * storeProduced on a host without the zstd program (Node's built-in zstd, the producer's output
 * through this process). Its own file: the zstd program is looked up once per module registry.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import * as age from 'age-encryption';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkedOutput } from '../../agent/child-process.ts';
import { restoreObject, storeProduced } from '../../agent/object-store.ts';
import { zstdProgram } from '../../agent/zstd-compress.ts';
import { FileStorage } from '../../storage/file-storage.ts';

let dir: string;
let storage: FileStorage;
let identity: string;
let recipient: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pgkeep-no-zstd-'));
  storage = new FileStorage(dir);
  identity = await age.generateX25519Identity();
  recipient = await age.identityToRecipient(identity);
  // The lookup is cached for the process's module registry, which is this file's alone.
  zstdProgram({ PATH: join(dir, 'no-such-dir') });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** `/bin/sh -c script` as the producer, through a checked pipe (there is no zstd to write into). */
const shell = (script: string) => ({
  into: () => {
    throw new Error('there is no zstd program to write into');
  },
  pipe: () => {
    const child = spawn('/bin/sh', ['-c', script], { stdio: ['ignore', 'pipe', 'ignore'] });
    return checkedOutput(child, (detail) => new Error(`producer ${detail}`));
  },
});

describe('storeProduced without the zstd program', () => {
  it('runs without the zstd program here', () => {
    expect(zstdProgram()).toBeNull();
  });

  it('completes the object only once completeAfter resolves, and reads back', async () => {
    const key = 'v1/t/gated.zst.age';
    let release = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const stored = storeProduced({
      storage,
      key,
      produce: shell('/usr/bin/head -c 1000000 /dev/urandom'),
      recipients: [recipient],
      completeAfter: gate,
    });
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await storage.head(key)).toBeUndefined();
    release();
    expect((await stored).plaintextSizeBytes).toBe(1_000_000);
    const out = new PassThrough();
    const [, plaintext] = await Promise.all([
      restoreObject({ storage, key, identities: [identity] }, out),
      buffer(out),
    ]);
    expect(plaintext.length).toBe(1_000_000);
  });

  it("fails with completeAfter's reason and leaves nothing", async () => {
    const refused = new Error('another dump failed');
    await expect(
      storeProduced({
        storage,
        key: 'v1/t/refused.zst.age',
        produce: shell('/usr/bin/head -c 1000000 /dev/urandom'),
        recipients: [recipient],
        completeAfter: new Promise((_resolve, reject) => setTimeout(() => reject(refused), 300)),
      }),
    ).rejects.toBe(refused);
    expect(await readdir(join(dir, 'v1/t'))).not.toContain('refused.zst.age');
    expect((await readdir(join(dir, 'v1/t'))).filter((f) => f.startsWith('.pgkeep-tmp'))).toEqual([]);
  });

  it('stops the producer and leaves nothing when aborted while it waits', async () => {
    const started = performance.now();
    await expect(
      storeProduced({
        storage,
        key: 'v1/t/aborted.zst.age',
        produce: shell('while :; do /usr/bin/head -c 1000000 /dev/urandom || exit 1; done'),
        recipients: [recipient],
        completeAfter: new Promise(() => {}),
        signal: AbortSignal.timeout(300),
      }),
    ).rejects.toThrow(/abort|timeout/i);
    expect(performance.now() - started).toBeLessThan(10_000);
    expect(await readdir(join(dir, 'v1/t'))).not.toContain('aborted.zst.age');
  });
});

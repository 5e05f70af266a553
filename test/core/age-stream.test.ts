import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import * as age from 'age-encryption';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AgeDecryptError,
  assertRecipients,
  decryptStream,
  encryptBuffer,
  encryptStream,
} from '../../core/age-stream.ts';
import { prerequisiteProblem } from '../../scripts/prerequisites.ts';
import { type AgeKeyPair, referenceKeyPairs } from '../support/age-keys.ts';

const execFileAsync = promisify(execFile);

async function encrypt(plaintext: Buffer, recipients: string[], pieces = 1): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const step = Math.max(1, Math.ceil(plaintext.length / pieces));
  const parts = [];
  for (let i = 0; i < plaintext.length; i += step) parts.push(plaintext.subarray(i, i + step));
  await pipeline(Readable.from(parts), await encryptStream(recipients), async (s: AsyncIterable<Buffer>) => {
    for await (const c of s) chunks.push(c);
  });
  return Buffer.concat(chunks);
}

async function decrypt(ciphertext: Buffer, identities: string[], pieceBytes = 7919): Promise<Buffer> {
  const parts = [];
  for (let i = 0; i < ciphertext.length; i += pieceBytes) parts.push(ciphertext.subarray(i, i + pieceBytes));
  const out = decryptStream(identities);
  const [plaintext] = await Promise.all([buffer(out), pipeline(Readable.from(parts), out)]);
  return plaintext;
}

describe('age stream', () => {
  let hybrid: AgeKeyPair;
  let x25519: AgeKeyPair;
  let hybrid2: AgeKeyPair;
  beforeAll(async () => {
    ({ hybrid, x25519 } = await referenceKeyPairs());
    ({ hybrid: hybrid2 } = await referenceKeyPairs());
  });

  // Sizes around the 64 KiB chunk boundary, where STREAM's last-chunk rule bites.
  const sizes = [0, 1, 65_535, 65_536, 65_537, 131_072, 300_001];

  it.each(sizes)('writes %i bytes that the reference library decrypts (hybrid recipient)', async (size) => {
    const plaintext = randomBytes(size);
    const ciphertext = await encrypt(plaintext, [hybrid.recipient], 3);
    const d = new age.Decrypter();
    d.addIdentity(hybrid.identity);
    expect(Buffer.from(await d.decrypt(ciphertext)).equals(plaintext)).toBe(true);
  });

  it.each(sizes)('encrypts %i bytes held in memory to what the reference library decrypts', async (size) => {
    const plaintext = randomBytes(size);
    const ciphertext = encryptBuffer([hybrid.recipient, hybrid2.recipient], plaintext);
    for (const identity of [hybrid.identity, hybrid2.identity]) {
      const d = new age.Decrypter();
      d.addIdentity(identity);
      expect(Buffer.from(await d.decrypt(ciphertext)).equals(plaintext)).toBe(true);
    }
  });

  it.each(sizes)('reads %i bytes that the reference library encrypted', async (size) => {
    const plaintext = randomBytes(size);
    const e = new age.Encrypter();
    e.addRecipient(x25519.recipient);
    const ciphertext = Buffer.from(await e.encrypt(plaintext));
    expect((await decrypt(ciphertext, [x25519.identity])).equals(plaintext)).toBe(true);
  });

  it('encrypts to several recipients, each of which can decrypt', async () => {
    const plaintext = randomBytes(100_000);
    const ciphertext = await encrypt(plaintext, [hybrid.recipient, hybrid2.recipient]);
    expect((await decrypt(ciphertext, [hybrid.identity])).equals(plaintext)).toBe(true);
    expect((await decrypt(ciphertext, [hybrid2.identity])).equals(plaintext)).toBe(true);
  });

  it('fails on a flipped byte anywhere in the payload', async () => {
    const ciphertext = await encrypt(randomBytes(200_000), [x25519.recipient]);
    for (const at of [ciphertext.length - 1, ciphertext.length - 70_000, ciphertext.length - 150_000]) {
      const damaged = Buffer.from(ciphertext);
      damaged[at] = (damaged[at] as number) ^ 0x01;
      await expect(decrypt(damaged, [x25519.identity])).rejects.toThrow(/failed authentication/);
    }
  });

  it('fails on truncation, including exactly at a chunk boundary', async () => {
    const ciphertext = await encrypt(randomBytes(200_000), [x25519.recipient]);
    const headerAndNonce = ciphertext.length - (200_000 + 4 * 16);
    for (const cut of [1, 16, 200_000 - 65_536 * 2 + 16]) {
      const truncated = ciphertext.subarray(0, ciphertext.length - cut);
      await expect(decrypt(truncated, [x25519.identity])).rejects.toBeInstanceOf(AgeDecryptError);
    }
    // Cut right after the first full chunk: what is left is a valid-looking chunk that is not last.
    const boundary = ciphertext.subarray(0, headerAndNonce + 65_536 + 16);
    await expect(decrypt(boundary, [x25519.identity])).rejects.toThrow(/failed authentication/);
  });

  it('says clearly when no identity matches', async () => {
    const ciphertext = await encrypt(randomBytes(10), [hybrid.recipient]);
    const other = await age.generateHybridIdentity();
    await expect(decrypt(ciphertext, [other])).rejects.toThrow(/no identity matches/);
  });

  it('rejects an empty or malformed recipient list before encrypting anything', () => {
    expect(() => assertRecipients([])).toThrow(/no recipient configured/);
    expect(() => assertRecipients(['ssh-ed25519 AAAA'])).toThrow(/invalid recipient/);
    expect(() => assertRecipients(['age1notreallyarecipient'])).toThrow(/invalid recipient/);
  });

  it('refuses to mix post-quantum and classic recipients, naming one of each', () => {
    for (const mix of [
      [hybrid.recipient, x25519.recipient],
      [x25519.recipient, hybrid2.recipient, hybrid.recipient],
    ]) {
      const error = (() => {
        try {
          assertRecipients(mix);
        } catch (e) {
          return e as Error;
        }
      })();
      expect(error?.message).toMatch(/^can't mix post-quantum and classic recipients/);
      expect(error?.message).toContain(x25519.recipient.slice(0, 24));
      expect(error?.message).toMatch(/"age1pq1[a-z0-9]+…" is post-quantum/);
    }
    expect(assertRecipients([hybrid.recipient, hybrid2.recipient])).toHaveLength(2);
    expect(assertRecipients([x25519.recipient])).toHaveLength(1);
  });

  describe('with the age CLI', () => {
    let dir: string;
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'pgkeep-age-'));
    });
    afterAll(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it('writes files that `age -d` decrypts with the matching identity', async () => {
      expect(prerequisiteProblem('age'), 'the age CLI proves the files are standard age').toBeUndefined();
      const plaintext = randomBytes(1_000_003);
      await writeFile(join(dir, 'key.txt'), `${x25519.identity}\n`, { mode: 0o600 });
      await writeFile(join(dir, 'file.age'), await encrypt(plaintext, [x25519.recipient], 5));
      await execFileAsync('age', [
        '-d',
        '-i',
        join(dir, 'key.txt'),
        '-o',
        join(dir, 'file.out'),
        join(dir, 'file.age'),
      ]);
      const { readFile } = await import('node:fs/promises');
      expect((await readFile(join(dir, 'file.out'))).equals(plaintext)).toBe(true);
    });

    it('reads files that `age -e` wrote', async () => {
      expect(prerequisiteProblem('age'), 'the age CLI writes the reference files').toBeUndefined();
      const plaintext = randomBytes(777_777);
      await writeFile(join(dir, 'plain'), plaintext);
      await execFileAsync('age', [
        '-e',
        '-r',
        x25519.recipient,
        '-o',
        join(dir, 'cli.age'),
        join(dir, 'plain'),
      ]);
      const { readFile } = await import('node:fs/promises');
      expect((await decrypt(await readFile(join(dir, 'cli.age')), [x25519.identity])).equals(plaintext)).toBe(
        true,
      );
    });
  });
});

/**
 * The official age test vectors (C2SP CCTV, vendored under test/vectors/cctv-age/) for the kinds
 * pgkeep reads: X25519 and mlkem768x25519 recipients, the header, the MAC and STREAM. Each vector
 * must end exactly as its `expect` line says, through the same decryptStream that restores use.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { inflateSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { AgeDecryptError, decryptStream } from '../../core/age-stream.ts';

const DIR = join(import.meta.dirname, '../vectors/cctv-age/testdata');

interface Vector {
  readonly expect: string;
  readonly payload?: string;
  readonly identities: string[];
  readonly file: Buffer;
}

function readVector(name: string): Vector {
  const raw = readFileSync(join(DIR, name));
  const split = raw.indexOf('\n\n');
  const fields = raw.subarray(0, split).toString().split('\n');
  const value = (key: string) =>
    fields.filter((l) => l.startsWith(`${key}: `)).map((l) => l.slice(key.length + 2));
  let file = raw.subarray(split + 2);
  if (value('compressed')[0] === 'zlib') file = inflateSync(file);
  return {
    expect: value('expect')[0] ?? '',
    payload: value('payload')[0],
    identities: value('identity'),
    file,
  };
}

/** Maps how decryption ended onto the vectors' outcome names. */
function outcome(error: unknown): string {
  if (!error) return 'success';
  if (!(error instanceof AgeDecryptError)) return `unexpected error: ${(error as Error).message}`;
  const { message } = error;
  if (message.startsWith('no identity matches')) return 'no match';
  if (message === 'invalid age header: invalid header HMAC') return 'HMAC failure';
  if (message.startsWith('invalid age header') || message.includes('ends inside the header'))
    return 'header failure';
  return 'payload failure';
}

async function run(vector: Vector): Promise<{ ended: string; plaintext: Buffer }> {
  const chunks: Buffer[] = [];
  let error: unknown;
  try {
    // Fed in odd pieces so chunk and header boundaries never line up with reads.
    const parts = [];
    for (let i = 0; i < vector.file.length; i += 4093) parts.push(vector.file.subarray(i, i + 4093));
    await pipeline(
      Readable.from(parts),
      decryptStream(vector.identities),
      async (s: AsyncIterable<Buffer>) => {
        for await (const c of s) chunks.push(c);
      },
    );
  } catch (e) {
    error = e;
  }
  return { ended: outcome(error), plaintext: Buffer.concat(chunks) };
}

const names = readdirSync(DIR).sort();

describe('C2SP CCTV age vectors', () => {
  it('are all present (85 vendored)', () => {
    expect(names.length).toBe(85);
  });

  it.each(names)('%s', async (name) => {
    const vector = readVector(name);
    if (vector.identities.length === 0) {
      // `empty`: a header failure before any identity is needed.
      expect(vector.expect).toBe('header failure');
      return;
    }
    const { ended, plaintext } = await run(vector);
    expect(ended).toBe(vector.expect);
    if (vector.expect === 'success') {
      expect(createHash('sha256').update(plaintext).digest('hex')).toBe(vector.payload);
    }
  });
});

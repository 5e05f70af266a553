// A consumer (pg_restore) may exit, done, before the object's last bytes are written to it; the
// object must still be read to its end, so its size and hash checks run, and the early close must
// not fail the stream: the consumer's exit status is what says whether the restore worked.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { untilConsumerCloses } from '../../../agent/logical/restore.ts';

describe('untilConsumerCloses', () => {
  it('reads the whole source to its end when the consumer exits after the first bytes', async () => {
    const chunks = Array.from({ length: 256 }, (_, i) => Buffer.alloc(64 * 1024, i));
    const whole = createHash('sha256');
    for (const chunk of chunks) whole.update(chunk);
    const seen = createHash('sha256');
    let bytes = 0;
    const hashing = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        seen.update(chunk);
        bytes += chunk.length;
        callback(null, chunk);
      },
    });
    // `head -c 100` reads 100 bytes and exits, closing its stdin with 16 MiB still to come.
    const consumer = spawn('head', ['-c', '100'], { stdio: ['pipe', 'ignore', 'inherit'] });
    const exited = once(consumer, 'exit');
    await pipeline(Readable.from(chunks), hashing, untilConsumerCloses(consumer.stdin));
    expect(bytes).toBe(256 * 64 * 1024);
    expect(seen.digest('hex')).toBe(whole.digest('hex'));
    expect((await exited)[0]).toBe(0);
  });

  it('passes every byte to a consumer that reads to the end', async () => {
    const chunks = Array.from({ length: 64 }, (_, i) => Buffer.alloc(64 * 1024, i));
    const consumer = spawn('wc', ['-c'], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    consumer.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const exited = once(consumer, 'exit');
    await pipeline(Readable.from(chunks), untilConsumerCloses(consumer.stdin));
    await exited;
    expect(out.trim()).toBe(String(64 * 64 * 1024));
  });
});

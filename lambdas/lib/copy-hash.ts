/** sha256 over a copy's bytes as they stream past: in part order, or held back until it matched. */
import { createHash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { CopyIntegrityError } from './s3-object.ts';

/**
 * sha256 over parts that finish out of order: the lowest unfinished part is hashed as it streams,
 * later parts are kept until their turn.
 */
export class InOrderHash {
  private hash = createHash('sha256');
  /** The hash before the current part's first byte: a failed current part restarts from here. */
  private beforeCurrent = this.hash.copy();
  private current: number;
  private readonly waiting = new Map<number, { chunks: Buffer[]; done: boolean }>();

  constructor(firstPart: number) {
    this.current = firstPart;
  }

  write(part: number, chunk: Buffer): void {
    if (part === this.current) this.hash.update(chunk);
    else this.entry(part).chunks.push(chunk);
  }

  finish(part: number): void {
    if (part !== this.current) {
      this.entry(part).done = true;
      return;
    }
    for (;;) {
      this.current++;
      this.beforeCurrent = this.hash.copy();
      const next = this.waiting.get(this.current);
      if (!next) return;
      this.waiting.delete(this.current);
      for (const chunk of next.chunks) this.write(this.current, chunk);
      if (!next.done) return;
    }
  }

  /** Forgets what a failed part sent, so it can be tried again. */
  reset(part: number): void {
    if (part === this.current) this.hash = this.beforeCurrent.copy();
    else this.waiting.delete(part);
  }

  digest(): string {
    return this.hash.digest('hex');
  }

  private entry(part: number) {
    let entry = this.waiting.get(part);
    if (!entry) {
      entry = { chunks: [], done: false };
      this.waiting.set(part, entry);
    }
    return entry;
  }
}

/**
 * Holds back the last chunk until the stream's sha256 and size match `expected`, so a wrong copy
 * never sends its final bytes and the upload fails incomplete instead of storing it.
 */
export function verifyBeforeLastByte(
  expected: { sizeBytes: number; sha256: string } | undefined,
  what: string,
): { stream: Transform; sha256: () => string } {
  const hash = createHash('sha256');
  let digest: string | undefined;
  let held: Buffer | undefined;
  let size = 0;
  const stream = new Transform({
    transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
      hash.update(chunk);
      size += chunk.length;
      const previous = held;
      held = chunk;
      callback(null, previous);
    },
    flush(callback: TransformCallback) {
      digest = hash.digest('hex');
      if (expected && (size !== expected.sizeBytes || digest !== expected.sha256)) {
        callback(
          new CopyIntegrityError(
            `${what} has ${size} bytes with sha256 ${digest}, expected ${expected.sizeBytes} bytes with sha256 ${expected.sha256}; nothing was written to the target`,
          ),
        );
        return;
      }
      callback(null, held);
    },
  });
  return { stream, sha256: () => digest ?? hash.copy().digest('hex') };
}

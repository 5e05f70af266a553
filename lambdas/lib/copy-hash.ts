/** sha256 over a multipart copy's bytes as they stream past, in part order. */
import { createHash } from 'node:crypto';

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

import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

/**
 * A pass-through that measures what flows through it: byte count and sha256. Optionally checks the
 * result at the end against `expected`, failing the stream (before it ends downstream) on a mismatch.
 */
export interface ExpectedContent {
  readonly sizeBytes: number;
  /** Absent: only the size is checked (and nothing is hashed). */
  readonly sha256?: string | undefined;
  /** Makes the error the stream fails with; `detail` says what differed. */
  readonly onMismatch: (detail: string) => Error;
}

export class HashingStream extends Transform {
  readonly #hash: Hash | undefined;
  readonly #expected: ExpectedContent | undefined;
  readonly #onProgress: ((sizeBytes: number) => void) | undefined;
  #sizeBytes = 0;
  #digest: string | undefined;

  constructor(
    options: {
      expected?: ExpectedContent | undefined;
      onProgress?: ((sizeBytes: number) => void) | undefined;
      /** Hash what flows through. @default true, unless `expected` gives only a size */
      hash?: boolean;
    } = {},
  ) {
    super();
    const hash = options.hash ?? (options.expected === undefined || options.expected.sha256 !== undefined);
    this.#hash = hash ? createHash('sha256') : undefined;
    this.#expected = options.expected;
    this.#onProgress = options.onProgress;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#hash?.update(chunk);
    this.#sizeBytes += chunk.length;
    if (this.#expected && this.#sizeBytes > this.#expected.sizeBytes) {
      callback(this.#expected.onMismatch(`more than the expected ${this.#expected.sizeBytes} bytes`));
      return;
    }
    this.#onProgress?.(this.#sizeBytes);
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    this.#digest = this.#hash?.digest('hex');
    const expected = this.#expected;
    if (expected && expected.sizeBytes !== this.#sizeBytes) {
      callback(expected.onMismatch(`${this.#sizeBytes} bytes, expected ${expected.sizeBytes}`));
    } else if (expected?.sha256 !== undefined && expected.sha256 !== this.#digest) {
      callback(expected.onMismatch(`sha256 ${this.#digest}, expected ${expected.sha256}`));
    } else {
      callback();
    }
  }

  get sizeBytes(): number {
    return this.#sizeBytes;
  }

  /** The sha256 in hex; only once the stream has ended. */
  get sha256(): string {
    if (this.#digest === undefined)
      throw new Error('sha256 read before the stream ended, or of a stream not hashed');
    return this.#digest;
  }
}

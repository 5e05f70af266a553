/** Streams to and from child processes whose failure must fail the stream, never end it. */
import type { ChildProcess } from 'node:child_process';
import { Transform, type TransformCallback } from 'node:stream';

export interface CheckedOutputOptions {
  /** Sees each chunk of stdout. */
  readonly onChunk?: (chunk: Buffer) => void;
  /**
   * Runs once the child exited 0, before the stream ends; the stream fails if it throws or
   * rejects. For checks of what the child reported, and for other processes the output depends on.
   */
  readonly beforeEnd?: (stderr: string) => void | Promise<void>;
}

/**
 * The child's stdout as a stream that ends only if the child exits 0; otherwise it fails, before
 * ending, with `makeError(detail)` (detail = how it exited and the tail of its stderr). Destroying
 * the stream (a consumer that gave up) stops the child.
 */
export function checkedOutput(
  child: ChildProcess,
  makeError: (detail: string) => Error,
  options: CheckedOutputOptions = {},
): Transform {
  const stderr = collectTail(child);
  const exit = exitOf(child);
  const { onChunk, beforeEnd } = options;
  const output = new Transform({
    transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
      onChunk?.(chunk);
      callback(null, chunk);
    },
    flush(callback: TransformCallback) {
      exit
        .then(async ({ code, signal }) => {
          if (code !== 0) throw makeError(`${describeExit(code, signal)}: ${stderr().trim()}`);
          await beforeEnd?.(stderr());
        })
        .then(() => callback(), callback);
    },
  });
  output.on('close', () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  });
  child.stdout?.pipe(output);
  child.once('error', (error) => output.destroy(makeError(`could not be started: ${error.message}`)));
  return output;
}

export function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `was killed by ${signal}` : `exited with code ${code}`;
}

export function exitOf(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
}

/** Keeps the last 8 KiB of stderr for error messages. */
export function collectTail(child: ChildProcess): () => string {
  let tail = '';
  child.stderr?.on('data', (d: Buffer) => {
    tail = (tail + d.toString()).slice(-8192);
  });
  return () => tail;
}

/**
 * The compression stage of the data path. Where the host has the `zstd` program it runs as a child
 * process: measured on a 157 MB pg_dump, the whole sha256 -> zstd -> age -> sha256 chain moved
 * 98-132 MB/s through it against 49-78 MB/s with Node's built-in zstd (about 60% of the CLI's speed
 * at level 1), and its CPU is a process of its own beside pg_dump's. Otherwise node:zlib's zstd. Both
 * write standard zstd frames; reading always uses node:zlib (decompression is fast either way).
 */
import { spawn } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { Duplex, type Readable, type Writable } from 'node:stream';
import { constants, createZstdCompress } from 'node:zlib';
import { checkedOutput } from './child-process.ts';

let found: string | null | undefined;

/** The `zstd` program on PATH, or null. Looked up once per process. */
export function zstdProgram(env: NodeJS.ProcessEnv = process.env): string | null {
  if (found === undefined) {
    found = null;
    for (const dir of (env.PATH ?? '').split(delimiter)) {
      const candidate = join(dir, 'zstd');
      try {
        accessSync(candidate, fsConstants.X_OK);
        found = candidate;
        break;
      } catch {}
    }
  }
  return found;
}

export class CompressionError extends Error {
  override name = 'CompressionError';
}

/**
 * A Duplex compressing at `level` with `program` (default: the one on PATH; `null` forces the
 * built-in codec). A failing or killed `zstd` fails the stream before it ends.
 */
export function zstdCompress(level: number, program: string | null = zstdProgram()): Duplex {
  if (program === null) {
    return createZstdCompress({
      chunkSize: 256 * 1024,
      params: { [constants.ZSTD_c_compressionLevel]: level },
    });
  }
  // -q: no progress on stderr; -c: stdout; plaintext only ever passes through pipes.
  const child = spawn(program, ['-q', '-c', `-${level}`], { stdio: ['pipe', 'pipe', 'pipe'] });
  const output = checkedOutput(child, (detail) => new CompressionError(`zstd ${detail}`));
  const stdin = child.stdin;
  if (!stdin) throw new CompressionError('zstd has no stdin');
  // If zstd dies, writes to it fail with EPIPE; its exit status, reported by `output`, is the error
  // that matters, so input is dropped from then on instead of failing the stream with a pipe error.
  stdin.on('error', () => {});
  const duplex = new Duplex({
    write(chunk: Buffer, _encoding, callback) {
      if (stdin.destroyed || stdin.writableEnded) return callback();
      if (stdin.write(chunk)) return callback();
      const resume = () => {
        stdin.off('drain', resume);
        stdin.off('close', resume);
        callback();
      };
      stdin.once('drain', resume);
      stdin.once('close', resume);
    },
    final(callback) {
      stdin.end();
      callback();
    },
    read() {
      output.resume();
    },
    destroy(error, callback) {
      output.destroy();
      callback(error);
    },
  });
  output.on('data', (chunk: Buffer) => {
    if (!duplex.push(chunk)) output.pause();
  });
  output.once('end', () => duplex.push(null));
  output.once('error', (error) => duplex.destroy(error));
  return duplex;
}

/** zstd as a child whose stdin another program writes into directly; see {@link zstdChild}. */
export interface ZstdChild {
  /** zstd's stdin: hand it to the producer as its stdout, then call {@link release}. */
  readonly stdin: Writable;
  /**
   * The compressed bytes; fails before it ends if zstd fails, its byte counts disagree, or the
   * promise given to {@link endsAfter} rejects.
   */
  readonly output: Readable;
  /** Closes this process's end of zstd's stdin, so zstd sees the end when the producer exits. */
  release(): void;
  /**
   * `output` ends only once `done` (the producer's exit) resolved, and fails with its reason
   * otherwise: zstd ends when its stdin closes, also when the producer crashed.
   */
  endsAfter(done: Promise<void>): void;
  /** Once `output` has ended: the exact number of plaintext bytes zstd read. */
  plaintextSizeBytes(): number;
}

/** zstd -vv's summary: "/*stdin*\ :100.00%   (12345678 B => 12345973 B, /*stdout*\)", padded. */
const SUMMARY = /\(\s*(\d+) B =>\s*(\d+) B,/;

/**
 * zstd reading a producer's output straight from a pipe: the plaintext never passes through this
 * process (two copies of every byte fewer, the largest CPU cost of a dump after zstd itself). The
 * plaintext size the manifest needs comes from zstd's own summary (-vv), checked against the
 * compressed bytes counted here, so a summary that cannot be read fails the object, never
 * silently records a wrong size. One stream stage does all of it: each stage costs CPU per chunk.
 */
export function zstdChild(level: number, program: string): ZstdChild {
  const child = spawn(program, ['-vv', '-c', `-${level}`], { stdio: ['pipe', 'pipe', 'pipe'] });
  const stdin = child.stdin;
  if (!stdin) throw new CompressionError('zstd has no stdin');
  stdin.on('error', () => {});
  let compressed = 0;
  let plaintext: number | undefined;
  let producerDone: Promise<void> = Promise.resolve();
  const output = checkedOutput(child, (detail) => new CompressionError(`zstd ${detail}`), {
    onChunk: (chunk) => {
      compressed += chunk.length;
    },
    // checkedOutput runs this only after zstd exited 0, so its summary is complete here.
    beforeEnd: async (stderr) => {
      const m = SUMMARY.exec(stderr);
      if (!m || Number(m[2]) !== compressed) {
        throw new CompressionError(
          `zstd's summary does not give the size it read (wrote ${compressed} bytes; stderr: ${stderr.trim().slice(-300)}): ` +
            "this zstd prints its byte counts in a form pgkeep does not read (it reads zstd 1.5's); take it off the agent's PATH to use the built-in codec",
        );
      }
      await producerDone;
      plaintext = Number(m[1]);
    },
  });
  return {
    stdin,
    output,
    release: () => stdin.destroy(),
    endsAfter: (done) => {
      // Awaited only when zstd has finished; a rejection before then is not unhandled.
      done.catch(() => {});
      producerDone = done;
    },
    plaintextSizeBytes: () => {
      if (plaintext === undefined) throw new CompressionError('zstd has not finished');
      return plaintext;
    },
  };
}

import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { decryptStream } from '../../core/age-stream.ts';
import { ExitCode } from '../exit-codes.ts';
import { asIntegrityError, readStages } from '../object-store.ts';
import { readIdentityFile } from '../recipients.ts';
import { parseCommandArgs } from './args.ts';
import { type Command, UsageError } from './command.ts';

export const decrypt: Command = {
  summary: 'decrypt and decompress one stored object (FILE or stdin) to stdout; needs no config',
  usage: `pgkeep decrypt -i IDENTITY [--raw] [FILE]

Decrypts one object pgkeep stored (a dump, a base backup tar, a WAL file: any *.zst.age), read from
FILE or stdin, and writes its zstd-decompressed plaintext to stdout, streaming. Needs neither a
configuration nor the repository, and reads both post-quantum (AGE-SECRET-KEY-PQ-1…) and X25519
identities, which Debian 12's age 1.1 cannot do for the former.
  --identity, -i FILE   the identity file (pgkeep keygen's); repeat to try several
  --raw                 only decrypt: write the zstd stream as stored, for zstd -d or inspection
Exits 5 when no identity matches or the file is truncated or modified; output already written
is then incomplete and must be discarded.
  pgkeep decrypt -i key.txt dump.zst.age | pg_restore -d newdb`,
  async run(context) {
    const { values, positionals } = parseCommandArgs(
      context.args,
      {
        identity: { type: 'string', short: 'i', multiple: true },
        raw: { type: 'boolean', default: false },
      },
      1,
    );
    if (!values.identity?.length)
      throw new UsageError('--identity FILE is required: the identity file the object was encrypted to');
    const file = positionals[0] && positionals[0] !== '-' ? positionals[0] : undefined;
    const stdin = process.stdin;
    if (!file && stdin.isTTY) throw new UsageError('no input: give the object as FILE, or pipe it to stdin');
    const identities = (await Promise.all(values.identity.map((path) => readIdentityFile(path)))).flat();
    const name = file ?? 'stdin';
    const source: Readable = file ? createReadStream(file) : stdin;
    const stages = values.raw ? [decryptStream(identities)] : readStages({ key: name, identities });
    try {
      // end: false — stdout belongs to the process, and a caller's stream to the caller.
      await pipeline([source, ...stages, context.stdout], { end: false });
    } catch (error) {
      throw asIntegrityError(name, error);
    }
    return ExitCode.ok;
  },
};

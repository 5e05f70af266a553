import { open } from 'node:fs/promises';
import { generateHybridIdentity, generateX25519Identity, identityToRecipient } from 'age-encryption';
import { ExitCode } from '../exit-codes.ts';
import { parseCommandArgs } from './args.ts';
import { type Command, UsageError } from './command.ts';

export const keygen: Command = {
  summary: 'make an identity (secret key) file and print its recipient (public key)',
  usage: `pgkeep keygen --output FILE [--x25519]

Writes a new age identity to FILE (mode 0600; an existing file is never overwritten) and prints
its recipient. Put the recipient in the host's config (recipients, PGKEEP_RECIPIENTS); keep FILE
away from the database host — only hosts that restore need it.
  --output, -o FILE   where to write the identity
  --x25519            a classic X25519 identity instead of the post-quantum hybrid default`,
  async run(context) {
    const { values } = parseCommandArgs(context.args, {
      output: { type: 'string', short: 'o' },
      x25519: { type: 'boolean', default: false },
    });
    if (!values.output) throw new UsageError('--output FILE is required: where to write the new identity');
    const identity = values.x25519 ? await generateX25519Identity() : await generateHybridIdentity();
    const recipient = await identityToRecipient(identity);
    let file: Awaited<ReturnType<typeof open>>;
    try {
      file = await open(values.output, 'wx', 0o600);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new UsageError(
          `${values.output} already exists: choose another --output; pgkeep never overwrites an identity`,
        );
      }
      throw error;
    }
    try {
      await file.writeFile(
        `# created: ${new Date().toISOString()}\n# public key: ${recipient}\n${identity}\n`,
      );
      await file.sync();
    } finally {
      await file.close();
    }
    context.stdout.write(`${recipient}\n`);
    context.stderr.write(`pgkeep: wrote the identity to ${values.output}; its recipient is printed above\n`);
    return ExitCode.ok;
  },
};

import { open } from 'node:fs/promises';
import { generateHybridIdentity, generateX25519Identity, identityToRecipient } from 'age-encryption';
import { ExitCode } from '../exit-codes.ts';
import { parseCommandArgs } from './args.ts';
import { type Command, UsageError } from './command.ts';

export const keygen: Command = {
  summary: 'make an identity (secret key) file and print its recipient (public key)',
  usage: `pgkeep keygen --output FILE [--x25519] [--kms-key ARN]

Writes a new age identity to FILE (mode 0600; an existing file is never overwritten) and prints
its recipient. Put the recipient in the host's config (recipients, PGKEEP_RECIPIENTS); keep FILE
away from the database host — only hosts that restore need it.

With --kms-key, makes the automation identity for restore verification instead: the identity is
sealed with KMS Encrypt under that key and only the sealed form (base64, one line) is written to
FILE; put its content in the deploy config (verification.sealedIdentity) and the printed recipient
in the host's recipients beside the escrow recipient. Uses the AWS SDK's credentials.
  --output, -o FILE   where to write the identity (sealed, with --kms-key)
  --x25519            a classic X25519 identity instead of the post-quantum hybrid default
  --kms-key ARN       seal the identity with this KMS key (the stack output BackupKeyArn)`,
  async run(context) {
    const { values } = parseCommandArgs(context.args, {
      output: { type: 'string', short: 'o' },
      x25519: { type: 'boolean', default: false },
      'kms-key': { type: 'string' },
    });
    if (!values.output) throw new UsageError('--output FILE is required: where to write the new identity');
    const identity = values.x25519 ? await generateX25519Identity() : await generateHybridIdentity();
    const recipient = await identityToRecipient(identity);
    const keyArn = values['kms-key'];
    let content = `# created: ${new Date().toISOString()}\n# public key: ${recipient}\n${identity}\n`;
    if (keyArn !== undefined) {
      const { kmsKeyRegion, sealIdentity } = await import('../kms/automation-identity.ts');
      const { awsKmsSealer } = await import('../kms/aws-kms.ts');
      try {
        kmsKeyRegion(keyArn);
      } catch (error) {
        throw new UsageError((error as Error).message);
      }
      // Sealed before the file is created, so a KMS failure leaves no file behind.
      content = `${await sealIdentity(identity, keyArn, awsKmsSealer(keyArn))}\n`;
    }
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
      await file.writeFile(content);
      await file.sync();
    } finally {
      await file.close();
    }
    context.stdout.write(`${recipient}\n`);
    context.stderr.write(
      keyArn === undefined
        ? `pgkeep: wrote the identity to ${values.output}; its recipient is printed above\n`
        : `pgkeep: wrote the identity sealed by ${keyArn} to ${values.output} (put it in verification.sealedIdentity); its recipient is printed above\n`,
    );
    return ExitCode.ok;
  },
};

/**
 * The automation identity: an age identity that only the restore-verification task can use. It is
 * never stored in the clear: `pgkeep keygen --kms-key` seals it with KMS Encrypt under a fixed
 * encryption context, and the task unseals it with one KMS Decrypt per run (never per object). The
 * host holds only its public recipient. KMS access goes through {@link KmsSealer}, so tests can use
 * a local stand-in; aws-kms.ts has the real one (@aws-sdk/client-kms, loaded only by the commands
 * that need it).
 */
import { AUTOMATION_IDENTITY_CONTEXT } from '../../core/verify-task.ts';

/** The two KMS operations the automation identity needs. Errors propagate; nothing is retried here. */
export interface KmsSealer {
  /** KMS Encrypt of `plaintext` under `keyId`, bound to `context`; resolves to the ciphertext blob. */
  encrypt(
    keyId: string,
    plaintext: Uint8Array,
    context: Readonly<Record<string, string>>,
  ): Promise<Uint8Array>;
  /** KMS Decrypt of `ciphertext`; rejects unless it was made under `keyId` with exactly `context`. */
  decrypt(
    keyId: string,
    ciphertext: Uint8Array,
    context: Readonly<Record<string, string>>,
  ): Promise<Uint8Array>;
}

/** The sealed identity is missing, malformed, or KMS refused to unseal it; the message says which. */
export class AutomationIdentityError extends Error {
  override name = 'AutomationIdentityError';
}

const KMS_KEY_ARN = /^arn:aws[a-z-]*:kms:([a-z0-9-]+):\d{12}:(key|alias)\/.+$/;

/** The region of a KMS key ARN, or an error naming the value and the expected shape. */
export function kmsKeyRegion(keyArn: string): string {
  const region = KMS_KEY_ARN.exec(keyArn)?.[1];
  if (!region)
    throw new AutomationIdentityError(
      `"${keyArn}" is not a KMS key ARN: use the stack output BackupKeyArn (arn:aws:kms:<region>:<account>:key/<id>)`,
    );
  return region;
}

/** What KMS (or the way to it) answered: the error's name and first line, never a credential. */
function kmsFault(error: unknown): string {
  const e = error as { name?: string; message?: string };
  return `${e.name ?? 'Error'}: ${(e.message ?? String(error)).split('\n')[0]?.slice(0, 200)}`;
}

/** Seals `identity` (an AGE-SECRET-KEY line) under `keyArn`: base64 of the KMS ciphertext, one line. */
export async function sealIdentity(identity: string, keyArn: string, kms: KmsSealer): Promise<string> {
  kmsKeyRegion(keyArn);
  let blob: Uint8Array;
  try {
    blob = await kms.encrypt(keyArn, Buffer.from(identity, 'utf8'), AUTOMATION_IDENTITY_CONTEXT);
  } catch (error) {
    throw new AutomationIdentityError(
      `KMS refused to seal the automation identity with ${keyArn} (${kmsFault(error)}): check the key ARN and that your credentials may kms:Encrypt with it`,
      { cause: error },
    );
  }
  return Buffer.from(blob).toString('base64');
}

/** Unseals what {@link sealIdentity} made; the identity stays in memory only. */
export async function unsealIdentity(sealed: string, keyArn: string, kms: KmsSealer): Promise<string> {
  const text = sealed.trim();
  if (text === '')
    throw new AutomationIdentityError(
      'no sealed automation identity: run pgkeep keygen --kms-key <BackupKeyArn> --output FILE and set verification.sealedIdentity in the deploy config to its content',
    );
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(text))
    throw new AutomationIdentityError(
      'the sealed automation identity is not base64: paste the file keygen --kms-key wrote, unchanged',
    );
  kmsKeyRegion(keyArn);
  let plaintext: Uint8Array;
  try {
    plaintext = await kms.decrypt(keyArn, Buffer.from(text, 'base64'), AUTOMATION_IDENTITY_CONTEXT);
  } catch (error) {
    throw new AutomationIdentityError(
      `KMS refused to unseal the automation identity with ${keyArn} (${kmsFault(error)}): check that it was sealed with this key and that this role may kms:Decrypt it`,
      { cause: error },
    );
  }
  const identity = Buffer.from(plaintext).toString('utf8').trim();
  if (!identity.startsWith('AGE-SECRET-KEY-'))
    throw new AutomationIdentityError(
      'the unsealed automation identity is not an age identity: seal it again with pgkeep keygen --kms-key',
    );
  return identity;
}

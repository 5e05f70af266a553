/**
 * A local stand-in for AWS KMS (AWS is unreachable from here): symmetric Encrypt/Decrypt with
 * AES-256-GCM under a random key per key ARN, the key ARN and the encryption context bound as
 * associated data, so a ciphertext unseals only with the same key and exactly the same context, as
 * with KMS. Two faces: an in-process {@link KmsSealer}, and an HTTP server on 127.0.0.1 speaking
 * KMS's AWS JSON 1.1 protocol (TrentService.Encrypt / TrentService.Decrypt), so the real
 * @aws-sdk/client-kms in a spawned agent talks to it through AWS_ENDPOINT_URL_KMS.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { KmsSealer } from '../../agent/kms/automation-identity.ts';
import { AwsFault, type AwsJsonServer, startAwsJsonServer } from './aws-json-server.ts';

function associatedData(keyArn: string, context: Readonly<Record<string, string>>): Buffer {
  const sorted = Object.keys(context)
    .sort()
    .map((k) => [k, context[k]]);
  return Buffer.from(JSON.stringify([keyArn, sorted]));
}

export interface LocalKms {
  readonly sealer: KmsSealer;
  /** Decrypt calls made, by key ARN (one per verification run is the contract). */
  readonly decryptCalls: string[];
  /** Starts the HTTP face; `decryptors` are the access key ids allowed to Decrypt (all when omitted). */
  serve(options?: { decryptors?: string[] }): Promise<AwsJsonServer>;
}

/** A KMS with one key per ARN in `keyArns`. */
export function localKms(keyArns: readonly string[]): LocalKms {
  const keys = new Map(keyArns.map((arn) => [arn, randomBytes(32)]));
  const decryptCalls: string[] = [];
  const keyOf = (arn: string) => {
    const key = keys.get(arn);
    if (!key) throw new AwsFault('NotFoundException', `Key '${arn}' does not exist`);
    return key;
  };
  const sealer: KmsSealer = {
    async encrypt(keyArn, plaintext, context) {
      const iv = randomBytes(12);
      const cipher = createCipheriv('aes-256-gcm', keyOf(keyArn), iv);
      cipher.setAAD(associatedData(keyArn, context));
      const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
      return Buffer.concat([iv, cipher.getAuthTag(), body]);
    },
    async decrypt(keyArn, ciphertext, context) {
      decryptCalls.push(keyArn);
      const blob = Buffer.from(ciphertext);
      try {
        const decipher = createDecipheriv('aes-256-gcm', keyOf(keyArn), blob.subarray(0, 12));
        decipher.setAAD(associatedData(keyArn, context));
        decipher.setAuthTag(blob.subarray(12, 28));
        return Buffer.concat([decipher.update(blob.subarray(28)), decipher.final()]);
      } catch (error) {
        if (error instanceof AwsFault) throw error;
        throw new AwsFault(
          'InvalidCiphertextException',
          'ciphertext, key or encryption context do not match',
        );
      }
    },
  };

  async function handle(
    target: string,
    body: Record<string, unknown>,
    accessKeyId: string,
    decryptors?: string[],
  ) {
    const context = (body.EncryptionContext ?? {}) as Record<string, string>;
    const keyArn = String(body.KeyId ?? '');
    if (target === 'TrentService.Encrypt') {
      const blob = await sealer.encrypt(keyArn, Buffer.from(String(body.Plaintext), 'base64'), context);
      return {
        CiphertextBlob: Buffer.from(blob).toString('base64'),
        KeyId: keyArn,
        EncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
      };
    }
    if (target === 'TrentService.Decrypt') {
      if (decryptors && !decryptors.includes(accessKeyId))
        throw new AwsFault(
          'AccessDeniedException',
          `${accessKeyId} is not authorized to perform kms:Decrypt`,
        );
      const plain = await sealer.decrypt(keyArn, Buffer.from(String(body.CiphertextBlob), 'base64'), context);
      return {
        Plaintext: Buffer.from(plain).toString('base64'),
        KeyId: keyArn,
        EncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
      };
    }
    throw new AwsFault('UnsupportedOperationException', `${target} is not implemented by the local KMS`);
  }

  return {
    sealer,
    decryptCalls,
    serve: (options = {}) =>
      startAwsJsonServer(({ target, body, accessKeyId }) =>
        handle(target, body, accessKeyId, options.decryptors),
      ),
  };
}

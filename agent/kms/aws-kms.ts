/** The real KMS behind {@link KmsSealer}: @aws-sdk/client-kms, imported only by the commands that seal or unseal. */
import { DecryptCommand, EncryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { AutomationIdentityError, type KmsSealer, kmsKeyRegion } from './automation-identity.ts';

/** KMS in the key's region, with the SDK's credential chain and endpoint settings (AWS_ENDPOINT_URL_KMS). */
export function awsKmsSealer(keyArn: string): KmsSealer {
  const client = new KMSClient({ region: kmsKeyRegion(keyArn), maxAttempts: 3 });
  return {
    async encrypt(keyId, plaintext, context) {
      const out = await client.send(
        new EncryptCommand({ KeyId: keyId, Plaintext: plaintext, EncryptionContext: { ...context } }),
      );
      if (!out.CiphertextBlob)
        throw new AutomationIdentityError(`KMS Encrypt with ${keyId} returned no ciphertext`);
      return out.CiphertextBlob;
    },
    async decrypt(keyId, ciphertext, context) {
      const out = await client.send(
        new DecryptCommand({ KeyId: keyId, CiphertextBlob: ciphertext, EncryptionContext: { ...context } }),
      );
      if (!out.Plaintext)
        throw new AutomationIdentityError(`KMS Decrypt with ${keyId} returned no plaintext`);
      return out.Plaintext;
    },
  };
}

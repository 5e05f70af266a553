import * as age from 'age-encryption';

export interface AgeKeyPair {
  readonly identity: string;
  readonly recipient: string;
}

/** A fresh post-quantum hybrid and a fresh X25519 key pair, made by the reference library. */
export async function referenceKeyPairs(): Promise<{ hybrid: AgeKeyPair; x25519: AgeKeyPair }> {
  const h = await age.generateHybridIdentity();
  const x = await age.generateX25519Identity();
  return {
    hybrid: { identity: h, recipient: await age.identityToRecipient(h) },
    x25519: { identity: x, recipient: await age.identityToRecipient(x) },
  };
}

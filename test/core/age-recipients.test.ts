import { randomBytes } from 'node:crypto';
import { bech32 } from '@scure/base';
import * as age from 'age-encryption';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  decodeCanonicalBase64,
  encodeHeader,
  parseIdentity,
  parseRecipient,
  type Stanza,
  wrapFileKey,
} from '../../core/age-recipients.ts';
import { recipientPayload, rememberRecipientPayload } from '../../core/recipient-payload.ts';
import { type AgeKeyPair, referenceKeyPairs } from '../support/age-keys.ts';

/** What the reference library makes of a header we wrote: the file key it unwraps with `identity`. */
async function unwrapWithLibrary(header: Buffer, identity: string | age.Identity): Promise<Buffer> {
  const decrypter = new age.Decrypter();
  decrypter.addIdentity(identity);
  return Buffer.from(await decrypter.decryptHeader(header));
}

describe('native age recipients', () => {
  let hybrid: AgeKeyPair;
  let x25519: AgeKeyPair;
  beforeAll(async () => {
    ({ hybrid, x25519 } = await referenceKeyPairs());
  });

  it.each(['hybrid', 'x25519'] as const)(
    'wraps a file key that the reference library unwraps (%s)',
    async (kind) => {
      const keys = kind === 'hybrid' ? hybrid : x25519;
      const fileKey = randomBytes(16);
      const stanza = wrapFileKey(parseRecipient(keys.recipient), fileKey);
      expect(stanza.args[0]).toBe(kind === 'hybrid' ? 'mlkem768x25519' : 'X25519');
      const header = encodeHeader([stanza], fileKey);
      expect((await unwrapWithLibrary(header, keys.identity)).equals(fileKey)).toBe(true);
    },
  );

  it('decodes stanza arguments only as canonical unpadded base64', () => {
    const share = randomBytes(32);
    const canonical = share.toString('base64').replace(/=+$/, '');
    expect(decodeCanonicalBase64(canonical)?.equals(share)).toBe(true);
    // 32 bytes leave 2 spare bits in the last character: setting one spells the same bytes.
    const last = canonical.at(-1) as string;
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
    const sloppy = `${canonical.slice(0, -1)}${alphabet[alphabet.indexOf(last) ^ 1]}`;
    expect(Buffer.from(sloppy, 'base64').equals(share)).toBe(true);
    expect(decodeCanonicalBase64(sloppy)).toBeUndefined();
    expect(decodeCanonicalBase64(`${canonical}=`)).toBeUndefined();
    expect(decodeCanonicalBase64(`${canonical.slice(0, 10)} ${canonical.slice(10)}`)).toBeUndefined();
  });

  it('uses a fresh ephemeral key for every wrap', () => {
    const recipient = parseRecipient(hybrid.recipient);
    const fileKey = randomBytes(16);
    const a = wrapFileKey(recipient, fileKey);
    const b = wrapFileKey(recipient, fileKey);
    expect(a.args[1]).not.toBe(b.args[1]);
    expect(a.body.equals(b.body)).toBe(false);
  });

  it('writes one header that each of several recipients opens', async () => {
    const fileKey = randomBytes(16);
    const header = encodeHeader(
      [hybrid.recipient, x25519.recipient].map((r) => wrapFileKey(parseRecipient(r), fileKey)),
      fileKey,
    );
    expect((await unwrapWithLibrary(header, hybrid.identity)).equals(fileKey)).toBe(true);
    expect((await unwrapWithLibrary(header, x25519.identity)).equals(fileKey)).toBe(true);
  });

  it('wraps stanza bodies at 64 columns with a final short line, as the spec requires', async () => {
    // Bodies of 0, 47, 48 and 96 bytes: a 48-byte multiple needs an extra empty line.
    const fileKey = randomBytes(16);
    for (const size of [0, 47, 48, 96]) {
      const body = randomBytes(size);
      const stanza: Stanza = { args: ['pgkeep-test', String(size)], body };
      const seen: Buffer[] = [];
      // A test identity that accepts our stanza and records the body the library parsed.
      const identity: age.Identity = {
        unwrapFileKey(stanzas) {
          const ours = stanzas.find((s) => s.args[0] === 'pgkeep-test');
          if (!ours) return null;
          seen.push(Buffer.from(ours.body));
          return fileKey;
        },
      };
      const header = encodeHeader([stanza], fileKey);
      expect((await unwrapWithLibrary(header, identity)).equals(fileKey)).toBe(true);
      expect(seen[0]?.equals(body)).toBe(true);
    }
  });

  it('authenticates the header: a changed byte fails the MAC', async () => {
    const fileKey = randomBytes(16);
    const header = encodeHeader([wrapFileKey(parseRecipient(x25519.recipient), fileKey)], fileKey);
    const damaged = Buffer.from(header);
    const at = damaged.indexOf('X25519') + 1;
    damaged[at] = 'y'.charCodeAt(0);
    await expect(unwrapWithLibrary(damaged, x25519.identity)).rejects.toThrow();
  });

  it('names what is wrong with a bad recipient', () => {
    expect(() => parseRecipient('age1notbech32')).toThrow(
      /invalid recipient "age1notbech32": not a bech32 string/,
    );
    expect(() => parseRecipient(x25519.recipient.toUpperCase())).toThrow(/lower case/);
    const otherPrefix = bech32.encode('age1xx', bech32.toWords(randomBytes(32)), false);
    expect(() => parseRecipient(otherPrefix)).toThrow(
      /expected an age1pq1… .* or age1… \(X25519\) recipient/,
    );
    const shortX = bech32.encode('age', bech32.toWords(randomBytes(31)), false);
    expect(() => parseRecipient(shortX)).toThrow(/expected an age1pq1/);
    // Every 12-bit coefficient 0xfff is above q = 3329: not an ML-KEM-768 key.
    const badHybrid = bech32.encode('age1pq', bech32.toWords(Buffer.alloc(1216, 0xff)), false);
    expect(() => parseRecipient(badHybrid)).toThrow(/ML-KEM-768 public key is malformed/);
  });

  it('refuses a low-order X25519 recipient instead of wrapping to a known secret', () => {
    const zero = bech32.encode('age', bech32.toWords(Buffer.alloc(32)), false);
    expect(() => wrapFileKey(parseRecipient(zero), randomBytes(16))).toThrow();
  });

  it.each(['hybrid', 'x25519'] as const)(
    'unwraps with node:crypto what the reference library encrypted (%s)',
    async (kind) => {
      const keys = kind === 'hybrid' ? hybrid : x25519;
      const plaintext = randomBytes(70_000);
      const encrypter = new age.Encrypter();
      encrypter.addRecipient(keys.recipient);
      const ciphertext = await encrypter.encrypt(plaintext);
      const decrypter = new age.Decrypter();
      decrypter.addIdentity(parseIdentity(keys.identity) as age.Identity);
      expect(Buffer.from(await decrypter.decrypt(ciphertext)).equals(plaintext)).toBe(true);
    },
  );

  it('finds no file key for another identity, and refuses a malformed stanza of its kind', async () => {
    const fileKey = randomBytes(16);
    const stanza = wrapFileKey(parseRecipient(hybrid.recipient), fileKey);
    const other = parseIdentity(await age.generateHybridIdentity());
    expect(other.unwrapFileKey([stanza])).toBeNull();
    expect(Buffer.from(parseIdentity(hybrid.identity).unwrapFileKey([stanza]) ?? []).equals(fileKey)).toBe(
      true,
    );
    const truncated = { args: stanza.args, body: stanza.body.subarray(0, 31) };
    expect(() => parseIdentity(hybrid.identity).unwrapFileKey([truncated])).toThrow(
      /invalid mlkem768x25519 stanza/,
    );
  });

  it('names what is wrong with a bad identity', () => {
    expect(() => parseIdentity('AGE-SECRET-KEY-1NOTBECH32')).toThrow(
      /invalid identity: not an age secret key/,
    );
    expect(() => parseIdentity(x25519.recipient)).toThrow(
      /expected an AGE-SECRET-KEY-PQ-1… or AGE-SECRET-KEY-1…/,
    );
  });
});

describe('a recipient decoded once, in the form the agent keeps', () => {
  it('parses to the same keys as decoding it afresh (hybrid): the reference library opens the header', async () => {
    const identity = await age.generateHybridIdentity();
    const recipient = await age.identityToRecipient(identity);
    // Taken back as a later process does, before the recipient is parsed: its keys come from it.
    rememberRecipientPayload(recipient, recipientPayload(recipient));
    const fileKey = randomBytes(16);
    const header = encodeHeader([wrapFileKey(parseRecipient(recipient), fileKey)], fileKey);
    expect((await unwrapWithLibrary(header, identity)).equals(fileKey)).toBe(true);
  });

  it('checks a kept payload as any recipient: one of the wrong length is refused when parsed', async () => {
    const recipient = await age.identityToRecipient(await age.generateX25519Identity());
    rememberRecipientPayload(recipient, `age:${Buffer.alloc(31).toString('base64')}`);
    expect(() => parseRecipient(recipient)).toThrow(/expected an age1pq1… \(post-quantum hybrid\) or age1…/);
  });
});

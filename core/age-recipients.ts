/**
 * age recipient stanzas, the age header, and identities' unwrapping, with node:crypto.
 *
 * Why not the `age-encryption` library here: every WAL push builds one header and every WAL
 * fetch unwraps one, each in a process of its own, and the library's pure-JS X25519 and ML-KEM
 * cost ~25 ms to import and ~100 ms on the first hybrid operation of a process (13 ms once warm).
 * Node 24's OpenSSL 3.5 has X25519, ML-KEM-768, SHA3-256, SHAKE256, HKDF and ChaCha20-Poly1305
 * natively: a hybrid header costs well under a millisecond. The library still parses headers
 * when decrypting (core/age-stream.ts) and makes keys (`pgkeep keygen`).
 *
 * The constructions follow the age specification (age-encryption.org/v1) and its post-quantum
 * extension exactly:
 *
 * - `X25519`: ephemeral share e·G; wrap key = HKDF-SHA256(e·R, salt = share || R,
 *   "age-encryption.org/v1/X25519"); body = ChaCha20-Poly1305(wrap key, zero nonce, file key).
 * - `mlkem768x25519`: the X-Wing KEM (ML-KEM-768 and X25519, shared secret = SHA3-256(ss_M ||
 *   ss_X || ct_X || pk_X || "\.//^\")) inside HPKE base mode (RFC 9180; KEM 0x647a, HKDF-SHA256,
 *   ChaCha20-Poly1305) with info "age-encryption.org/mlkem768x25519"; body = the sealed file key.
 *   The identity is a 32-byte seed; SHAKE256 expands it to the ML-KEM seed and the X25519 secret.
 *
 * Byte compatibility is proven by decryption with the reference library and the `age` CLI in
 * test/core/age-recipients.test.ts and test/core/age-stream.test.ts, in both directions.
 */
import {
  type BinaryLike,
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  decapsulate,
  diffieHellman,
  encapsulate,
  generateKeyPairSync,
  hkdfSync,
  type KeyObject,
} from 'node:crypto';
import { base64nopad, bech32 } from '@scure/base';
import { decodeRecipient, shownRecipient } from './recipient-payload.ts';

/** A parsed `age1…` (X25519) or `age1pq1…` (ML-KEM-768 + X25519 hybrid) recipient. */
export type AgeRecipient =
  | { readonly kind: 'x25519'; readonly publicKey: Buffer }
  | {
      readonly kind: 'mlkem768x25519';
      readonly mlkemPublicKey: KeyObject;
      /** The X25519 half, raw 32 bytes: it enters the X-Wing combiner as bytes. */
      readonly x25519PublicKey: Buffer;
    };

/** A recipient stanza: `-> args…` and its body. */
export interface Stanza {
  readonly args: readonly string[];
  readonly body: Buffer;
}

const MLKEM768_PUBLIC_KEY_BYTES = 1184;
const X25519_KEY_BYTES = 32;
/** SubjectPublicKeyInfo prefixes (RFC 8410 for X25519; FIPS 203 OID 2.16.840.1.101.3.4.4.2 for ML-KEM-768). */
const X25519_SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');
const MLKEM768_SPKI_PREFIX = Buffer.from('308204b2300b0609608648016503040402038204a100', 'hex');
const XWING_LABEL = Buffer.from('5c2e2f2f5e5c', 'hex'); // "\.//^\"
const HPKE_KEM_MLKEM768_X25519 = 0x647a;

/** Recipients already parsed in this process (the key objects are built once). */
const parsedRecipients = new Map<string, AgeRecipient>();

/** Throws with what is wrong unless `recipient` is an X25519 or hybrid age recipient. */
export function parseRecipient(recipient: string): AgeRecipient {
  const known = parsedRecipients.get(recipient);
  if (known) return known;
  const { prefix, bytes } = decodeRecipient(recipient);
  const parsed = recipientFromBytes(shownRecipient(recipient), prefix, bytes);
  parsedRecipients.set(recipient, parsed);
  return parsed;
}

function recipientFromBytes(shown: string, prefix: string, bytes: Uint8Array): AgeRecipient {
  if (prefix === 'age' && bytes.length === X25519_KEY_BYTES) {
    return { kind: 'x25519', publicKey: Buffer.from(bytes) };
  }
  if (prefix === 'age1pq' && bytes.length === MLKEM768_PUBLIC_KEY_BYTES + X25519_KEY_BYTES) {
    const raw = Buffer.from(bytes);
    let mlkemPublicKey: KeyObject;
    try {
      mlkemPublicKey = createPublicKey({
        key: Buffer.concat([MLKEM768_SPKI_PREFIX, raw.subarray(0, MLKEM768_PUBLIC_KEY_BYTES)]),
        format: 'der',
        type: 'spki',
      });
    } catch (cause) {
      throw new Error(`invalid recipient ${shown}: its ML-KEM-768 public key is malformed`, { cause });
    }
    return {
      kind: 'mlkem768x25519',
      mlkemPublicKey,
      x25519PublicKey: raw.subarray(MLKEM768_PUBLIC_KEY_BYTES),
    };
  }
  throw new Error(
    `invalid recipient ${shown}: expected an age1pq1… (post-quantum hybrid) or age1… (X25519) recipient`,
  );
}

function x25519PublicKeyObject(raw: Buffer): KeyObject {
  return createPublicKey({ key: Buffer.concat([X25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
}

/** A fresh X25519 key pair: the private key object and the raw public key (the "share"). */
function ephemeralX25519(): { privateKey: KeyObject; share: Buffer } {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  const share = publicKey.export({ format: 'der', type: 'spki' }).subarray(X25519_SPKI_PREFIX.length);
  return { privateKey, share };
}

function x25519SharedSecret(privateKey: KeyObject, peer: Buffer): Buffer {
  const secret = diffieHellman({ privateKey, publicKey: x25519PublicKeyObject(peer) });
  // A low-order peer point yields all zeros; age requires refusing it.
  if (secret.every((b) => b === 0)) throw new Error('X25519 recipient is a low-order point');
  return secret;
}

function seal(key: BinaryLike, nonce: Buffer, plaintext: Buffer): Buffer {
  const cipher = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
  const sealed = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([sealed, cipher.getAuthTag()]);
}

function wrapX25519(publicKey: Buffer, fileKey: Buffer): Stanza {
  const { privateKey, share } = ephemeralX25519();
  const secret = x25519SharedSecret(privateKey, publicKey);
  const wrapKey = Buffer.from(
    hkdfSync('sha256', secret, Buffer.concat([share, publicKey]), 'age-encryption.org/v1/X25519', 32),
  );
  return { args: ['X25519', base64NoPad(share)], body: seal(wrapKey, Buffer.alloc(12), fileKey) };
}

function hmacSha256(key: Buffer, data: Buffer): Buffer {
  return createHmac('sha256', key).update(data).digest();
}

/** RFC 9180 LabeledExtract and LabeledExpand for HKDF-SHA256 (outputs here are at most 32 bytes). */
function hpke(suiteId: Buffer) {
  const labeled = (label: string) => Buffer.concat([Buffer.from('HPKE-v1'), suiteId, Buffer.from(label)]);
  return {
    extract: (salt: Buffer, label: string, ikm: Buffer) =>
      hmacSha256(salt, Buffer.concat([labeled(label), ikm])),
    expand(prk: Buffer, label: string, info: Buffer, length: number) {
      const lengthPrefix = Buffer.from([length >> 8, length & 0xff]);
      return hmacSha256(prk, Buffer.concat([lengthPrefix, labeled(label), info, Buffer.from([1])])).subarray(
        0,
        length,
      );
    },
  };
}

/** The X-Wing combiner: the hybrid KEM's shared secret from both halves. */
function xwingSharedSecret(
  mlkemSecret: Buffer,
  x25519Secret: Buffer,
  x25519Share: Buffer,
  x25519Public: Buffer,
) {
  return createHash('sha3-256')
    .update(Buffer.concat([mlkemSecret, x25519Secret, x25519Share, x25519Public, XWING_LABEL]))
    .digest();
}

/** HPKE base mode key schedule; suite = KEM 0x647a, KDF HKDF-SHA256 (1), AEAD ChaCha20Poly1305 (3). */
function hybridStanzaKey(sharedSecret: Buffer): { key: Buffer; nonce: Buffer } {
  const suiteId = Buffer.from([
    ...Buffer.from('HPKE'),
    HPKE_KEM_MLKEM768_X25519 >> 8,
    HPKE_KEM_MLKEM768_X25519 & 0xff,
    0,
    1,
    0,
    3,
  ]);
  const { extract, expand } = hpke(suiteId);
  const empty = Buffer.alloc(0);
  const keyScheduleContext = Buffer.concat([
    Buffer.from([0]), // mode_base
    extract(empty, 'psk_id_hash', empty),
    extract(empty, 'info_hash', Buffer.from('age-encryption.org/mlkem768x25519')),
  ]);
  const secret = extract(sharedSecret, 'secret', empty);
  return {
    key: expand(secret, 'key', keyScheduleContext, 32),
    nonce: expand(secret, 'base_nonce', keyScheduleContext, 12),
  };
}

function wrapHybrid(recipient: Extract<AgeRecipient, { kind: 'mlkem768x25519' }>, fileKey: Buffer): Stanza {
  const { sharedKey: mlkemSecret, ciphertext: mlkemCiphertext } = encapsulate(recipient.mlkemPublicKey);
  const { privateKey, share } = ephemeralX25519();
  const x25519Secret = x25519SharedSecret(privateKey, recipient.x25519PublicKey);
  const { key, nonce } = hybridStanzaKey(
    xwingSharedSecret(mlkemSecret, x25519Secret, share, recipient.x25519PublicKey),
  );
  const encapsulated = Buffer.concat([mlkemCiphertext, share]);
  return { args: ['mlkem768x25519', base64NoPad(encapsulated)], body: seal(key, nonce, fileKey) };
}

/** Wraps `fileKey` for one recipient. */
export function wrapFileKey(recipient: AgeRecipient, fileKey: Buffer): Stanza {
  return recipient.kind === 'x25519'
    ? wrapX25519(recipient.publicKey, fileKey)
    : wrapHybrid(recipient, fileKey);
}

function base64NoPad(bytes: Buffer): string {
  return bytes.toString('base64').replace(/=+$/, '');
}

/**
 * `text` decoded as canonical unpadded base64, or undefined. age requires it: Node's decoder
 * accepts padding, stray characters and non-zero trailing bits, so one stanza could be spelled
 * several ways and a header's MAC would not pin its bytes.
 */
export function decodeCanonicalBase64(text: string): Buffer | undefined {
  try {
    return Buffer.from(base64nopad.decode(text));
  } catch {
    return undefined;
  }
}

/**
 * The age header for `stanzas`, MAC'd with `fileKey`, ending with its newline (the payload nonce
 * follows). Stanza bodies are wrapped at 64 columns, with a final short (possibly empty) line.
 */
export function encodeHeader(stanzas: readonly Stanza[], fileKey: Buffer): Buffer {
  const lines = ['age-encryption.org/v1\n'];
  for (const stanza of stanzas) {
    lines.push(`-> ${stanza.args.join(' ')}\n`);
    for (let i = 0; i <= stanza.body.length; i += 48) {
      lines.push(`${base64NoPad(stanza.body.subarray(i, i + 48))}\n`);
    }
  }
  lines.push('---');
  const unsealed = Buffer.from(lines.join(''));
  const macKey = Buffer.from(hkdfSync('sha256', fileKey, Buffer.alloc(0), 'header', 32));
  return Buffer.concat([unsealed, Buffer.from(` ${base64NoPad(hmacSha256(macKey, unsealed))}\n`)]);
}

/** What the `age-encryption` library's Decrypter asks of an identity (its `Identity` interface). */
export interface StanzaUnwrapper {
  unwrapFileKey(
    stanzas: readonly { readonly args: readonly string[]; readonly body: Uint8Array }[],
  ): Uint8Array | null;
}

/** PKCS#8 prefixes: X25519 (RFC 8410), and ML-KEM-768 from its 64-byte seed (the `seed` choice of FIPS 203's key format). */
const X25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const MLKEM768_SEED_PKCS8_PREFIX = Buffer.from('3054020100300b060960864801650304040204428040', 'hex');

function x25519PrivateKeyObject(raw: Buffer): KeyObject {
  return createPrivateKey({ key: Buffer.concat([X25519_PKCS8_PREFIX, raw]), format: 'der', type: 'pkcs8' });
}

function x25519RawPublicKey(privateKey: KeyObject): Buffer {
  return createPublicKey(privateKey)
    .export({ format: 'der', type: 'spki' })
    .subarray(X25519_SPKI_PREFIX.length);
}

function open(key: Buffer, nonce: Buffer, sealed: Uint8Array): Buffer | null {
  const body = Buffer.from(sealed);
  const decipher = createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
  decipher.setAuthTag(body.subarray(body.length - 16));
  const plain = decipher.update(body.subarray(0, body.length - 16));
  try {
    decipher.final();
    return plain;
  } catch {
    return null;
  }
}

/**
 * An `AGE-SECRET-KEY-PQ-1…` (hybrid) or `AGE-SECRET-KEY-1…` (X25519) identity as a stanza
 * unwrapper for the library's Decrypter, with node:crypto doing the key agreement: the library's
 * pure-JS ML-KEM costs ~100 ms at a process's first decryption (every wal-fetch is a process).
 * The library still parses the header and checks its MAC.
 */
export function parseIdentity(identity: string): StanzaUnwrapper {
  let prefix: string;
  let bytes: Uint8Array;
  try {
    const decoded = bech32.decode(identity.toLowerCase() as `${string}1${string}`, false);
    prefix = decoded.prefix;
    bytes = bech32.fromWords(decoded.words);
  } catch (cause) {
    throw new Error('invalid identity: not an age secret key (AGE-SECRET-KEY-…)', { cause });
  }
  if (prefix === 'age-secret-key-pq-' && bytes.length === 32) return hybridIdentity(Buffer.from(bytes));
  if (prefix === 'age-secret-key-' && bytes.length === 32) return x25519Identity(Buffer.from(bytes));
  throw new Error('invalid identity: expected an AGE-SECRET-KEY-PQ-1… or AGE-SECRET-KEY-1… secret key');
}

function x25519Identity(secret: Buffer): StanzaUnwrapper {
  const privateKey = x25519PrivateKeyObject(secret);
  const publicKey = x25519RawPublicKey(privateKey);
  return {
    unwrapFileKey(stanzas) {
      for (const stanza of stanzas) {
        if (stanza.args[0] !== 'X25519') continue;
        const share = decodeCanonicalBase64(stanza.args[1] ?? '');
        if (stanza.args.length !== 2 || share?.length !== 32 || stanza.body.length !== 32) {
          throw new Error('invalid X25519 stanza');
        }
        const shared = diffieHellman({ privateKey, publicKey: x25519PublicKeyObject(share) });
        if (shared.every((b) => b === 0)) throw new Error('invalid X25519 stanza: low-order share');
        const wrapKey = Buffer.from(
          hkdfSync('sha256', shared, Buffer.concat([share, publicKey]), 'age-encryption.org/v1/X25519', 32),
        );
        const fileKey = open(wrapKey, Buffer.alloc(12), stanza.body);
        if (fileKey) return fileKey;
      }
      return null;
    },
  };
}

function hybridIdentity(seed: Buffer): StanzaUnwrapper {
  // X-Wing: SHAKE256(seed) gives the ML-KEM-768 seed (d || z, 64 bytes), then the X25519 secret.
  const expanded = createHash('shake256', { outputLength: 96 }).update(seed).digest();
  const mlkem = createPrivateKey({
    key: Buffer.concat([MLKEM768_SEED_PKCS8_PREFIX, expanded.subarray(0, 64)]),
    format: 'der',
    type: 'pkcs8',
  });
  const x25519 = x25519PrivateKeyObject(expanded.subarray(64));
  const x25519Public = x25519RawPublicKey(x25519);
  return {
    unwrapFileKey(stanzas) {
      for (const stanza of stanzas) {
        if (stanza.args[0] !== 'mlkem768x25519') continue;
        const encapsulated = decodeCanonicalBase64(stanza.args[1] ?? '');
        if (stanza.args.length !== 2 || encapsulated?.length !== 1120 || stanza.body.length !== 32) {
          throw new Error('invalid mlkem768x25519 stanza');
        }
        const share = encapsulated.subarray(1088);
        const mlkemSecret = decapsulate(mlkem, encapsulated.subarray(0, 1088));
        const x25519Secret = diffieHellman({ privateKey: x25519, publicKey: x25519PublicKeyObject(share) });
        const { key, nonce } = hybridStanzaKey(
          xwingSharedSecret(mlkemSecret, x25519Secret, share, x25519Public),
        );
        const fileKey = open(key, nonce, stanza.body);
        if (fileKey) return fileKey;
      }
      return null;
    },
  };
}

/**
 * age v1 (age-encryption.org/v1) as Node streams.
 *
 * The cryptography is node:crypto's: recipient stanzas (including the post-quantum hybrid
 * `age1pq1…` kind), the header MAC and the key agreement of identities in core/age-recipients.ts,
 * and the payload (STREAM: ChaCha20-Poly1305 over 64 KiB chunks, nonce = 11-byte big-endian
 * counter || last-chunk flag) here, about ten times faster than the library's pure-JS cipher (see
 * bench/). Reading a header (parsing, MAC check) is left to the `age-encryption` library, loaded
 * only when something is decrypted. Byte compatibility with the library and the
 * `age` CLI is proven both ways in test/core/age-stream.test.ts.
 */
import {
  createCipheriv,
  createDecipheriv,
  createSecretKey,
  hkdfSync,
  type KeyObject,
  randomBytes,
} from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import type { Decrypter } from 'age-encryption';
import {
  type AgeRecipient,
  decodeCanonicalBase64,
  encodeHeader,
  parseIdentity,
  parseRecipient,
  wrapFileKey,
} from './age-recipients.ts';

const CHUNK_BYTES = 64 * 1024;
const TAG_BYTES = 16;
const NONCE_BYTES = 16;
const FILE_KEY_BYTES = 16;
/** A header larger than this is not something pgkeep wrote (hybrid stanzas are ~1.6 KiB each). */
const MAX_HEADER_BYTES = 256 * 1024;
const HEADER_END = Buffer.from('\n--- ');

/** The object could not be decrypted: wrong identity, corruption or truncation. */
export class AgeDecryptError extends Error {
  override name = 'AgeDecryptError';
}

/**
 * Throws unless every recipient is an `age1…` X25519 or `age1pq1…` hybrid recipient, all of one
 * kind; returns them parsed. One classic stanza next to hybrid ones would let whoever records the
 * objects today decrypt them once X25519 falls, so the mix is refused, as age 1.3 refuses it.
 */
export function assertRecipients(recipients: readonly string[]): AgeRecipient[] {
  if (recipients.length === 0) {
    throw new Error(
      'no recipient configured: set recipients in the config file or PGKEEP_RECIPIENTS (run `pgkeep keygen` to make one)',
    );
  }
  const parsed = recipients.map(parseRecipient);
  const hybrid = parsed.findIndex((r) => r.kind === 'mlkem768x25519');
  const classic = parsed.findIndex((r) => r.kind === 'x25519');
  if (hybrid >= 0 && classic >= 0) {
    const shown = (i: number) => `"${(recipients[i] ?? '').slice(0, 24)}…"`;
    throw new Error(
      `can't mix post-quantum and classic recipients: ${shown(hybrid)} is post-quantum (age1pq1…) and ${shown(classic)} is classic X25519 (age1…); use only age1pq1… recipients (run \`pgkeep keygen\` for more), or only age1… ones`,
    );
  }
  return parsed;
}

/** An age header wrapping a fresh random file key for every recipient, and that key. */
function makeHeader(recipients: readonly AgeRecipient[]): { header: Buffer; fileKey: Buffer } {
  const fileKey = randomBytes(FILE_KEY_BYTES);
  return {
    header: encodeHeader(
      recipients.map((r) => wrapFileKey(r, fileKey)),
      fileKey,
    ),
    fileKey,
  };
}

/**
 * A KeyObject, not bytes: every 64 KiB chunk takes a new cipher, and a key given as bytes would be
 * turned into a key object again for each one.
 */
function payloadKey(fileKey: Uint8Array, nonce: Uint8Array): KeyObject {
  return createSecretKey(Buffer.from(hkdfSync('sha256', fileKey, nonce, 'payload', 32)));
}

function chunkNonce(counter: number, last: boolean): Buffer {
  const nonce = Buffer.alloc(12);
  // 11-byte big-endian counter; 2^48 chunks of 64 KiB (16 EiB) is far beyond any object.
  nonce.writeUIntBE(counter, 5, 6);
  nonce[11] = last ? 1 : 0;
  return nonce;
}

/** Seals one STREAM chunk: its ciphertext and tag. */
function sealChunk(key: KeyObject, counter: number, last: boolean, plaintext: Buffer): [Buffer, Buffer] {
  const cipher = createCipheriv('chacha20-poly1305', key, chunkNonce(counter, last), {
    authTagLength: TAG_BYTES,
  });
  const sealed = cipher.update(plaintext);
  cipher.final();
  return [sealed, cipher.getAuthTag()];
}

/** The header, the payload nonce and the payload key of a new age file to `recipients`. */
function begin(recipients: readonly string[]): { prefix: Buffer; key: KeyObject } {
  const { header, fileKey } = makeHeader(assertRecipients(recipients));
  const nonce = randomBytes(NONCE_BYTES);
  return { prefix: Buffer.concat([header, nonce]), key: payloadKey(fileKey, nonce) };
}

/**
 * A Transform from plaintext to an age file encrypted to `recipients`. Memory is one 64 KiB chunk.
 */
export async function encryptStream(recipients: readonly string[]): Promise<Transform> {
  const { prefix, key } = begin(recipients);
  return new StreamEncrypter(prefix, key);
}

/** `plaintext` as one age file encrypted to `recipients`, for data already in memory (a WAL segment). */
export function encryptBuffer(recipients: readonly string[], plaintext: Buffer): Buffer {
  const { prefix, key } = begin(recipients);
  const parts = [prefix];
  let counter = 0;
  // An empty plaintext is one empty last chunk; otherwise the last chunk is never empty.
  for (let offset = 0; offset === 0 || offset < plaintext.length; offset += CHUNK_BYTES) {
    const end = Math.min(offset + CHUNK_BYTES, plaintext.length);
    parts.push(...sealChunk(key, counter++, end === plaintext.length, plaintext.subarray(offset, end)));
  }
  return Buffer.concat(parts);
}

class StreamEncrypter extends Transform {
  readonly #key: KeyObject;
  readonly #staged = Buffer.allocUnsafe(CHUNK_BYTES);
  #filled = 0;
  #counter = 0;

  constructor(prefix: Buffer, key: KeyObject) {
    super();
    this.#key = key;
    this.push(prefix);
  }

  override _transform(data: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    let offset = 0;
    while (offset < data.length) {
      // A full chunk is sealed only once more data proves it is not the last one.
      if (this.#filled === CHUNK_BYTES) this.#seal(false);
      const n = data.copy(this.#staged, this.#filled, offset);
      this.#filled += n;
      offset += n;
    }
    callback();
  }

  override _flush(callback: TransformCallback): void {
    this.#seal(true);
    callback();
  }

  #seal(last: boolean): void {
    for (const part of sealChunk(this.#key, this.#counter++, last, this.#staged.subarray(0, this.#filled)))
      this.push(part);
    this.#filled = 0;
  }
}

/**
 * A Transform from an age file to its plaintext, using the first of `identities`
 * (`AGE-SECRET-KEY-PQ-1…` or `AGE-SECRET-KEY-1…`) that matches a recipient stanza. Fails with
 * {@link AgeDecryptError} on a wrong identity, any modified byte, or truncation; plaintext of a
 * chunk is released only after that chunk authenticated.
 */
export function decryptStream(identities: readonly string[]): Transform {
  if (identities.length === 0)
    throw new Error('no identity given: set identity in the config file or PGKEEP_IDENTITY');
  const unwrappers = identities.map(parseIdentity);
  const decrypter = import('age-encryption').then(({ Decrypter }) => {
    const d = new Decrypter();
    for (const unwrapper of unwrappers) d.addIdentity(unwrapper);
    return d;
  });
  // Settled when the header arrives; a rejection here is reported there, not as unhandled.
  decrypter.catch(() => undefined);
  return new StreamDecrypter(decrypter);
}

class StreamDecrypter extends Transform {
  readonly #decrypter: Promise<Decrypter>;
  /** Bytes before the payload key is known: the header and the nonce. */
  #prefix: Buffer | undefined = Buffer.alloc(0);
  #key: KeyObject | undefined;
  readonly #staged = Buffer.allocUnsafe(CHUNK_BYTES + TAG_BYTES);
  #filled = 0;
  #counter = 0;

  constructor(decrypter: Promise<Decrypter>) {
    super();
    this.#decrypter = decrypter;
  }

  override _transform(data: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (this.#key) {
      this.#take(data, callback);
      return;
    }
    this.#readHeader(data).then(
      (rest) => (rest ? this.#take(rest, callback) : callback()),
      (error: unknown) => callback(error as Error),
    );
  }

  async #readHeader(data: Buffer): Promise<Buffer | undefined> {
    const prefix = Buffer.concat([this.#prefix ?? Buffer.alloc(0), data]);
    this.#prefix = prefix;
    const macLine = prefix.indexOf(HEADER_END);
    const headerEnd = macLine < 0 ? -1 : prefix.indexOf(0x0a, macLine + 1);
    if (headerEnd < 0) {
      if (prefix.length > MAX_HEADER_BYTES) throw new AgeDecryptError('not an age file: no header end found');
      return undefined;
    }
    if (prefix.length < headerEnd + 1 + NONCE_BYTES) return undefined;
    const header = prefix.subarray(0, headerEnd + 1);
    // The library checks the MAC's value but not its spelling: a short, padded or trailing-garbage
    // MAC line is a malformed header, not a wrong key.
    const mac = prefix.subarray(macLine + HEADER_END.length, headerEnd).toString('latin1');
    if (decodeCanonicalBase64(mac)?.length !== 32) {
      throw new AgeDecryptError(
        `invalid age header: its MAC line "--- ${mac.slice(0, 60)}" is not 32 bytes of canonical unpadded base64`,
      );
    }
    // An identity the library rejects fails here with its own message, not as a header problem.
    const decrypter = await this.#decrypter;
    let fileKey: Uint8Array;
    try {
      fileKey = await decrypter.decryptHeader(header);
    } catch (cause) {
      const message = (cause as Error).message;
      throw new AgeDecryptError(
        /no identity matched/.test(message)
          ? 'no identity matches any of the object’s recipients: use the identity whose recipient the backup was encrypted to'
          : `invalid age header: ${message}`,
        { cause },
      );
    }
    const nonce = prefix.subarray(headerEnd + 1, headerEnd + 1 + NONCE_BYTES);
    this.#key = payloadKey(fileKey, nonce);
    this.#prefix = undefined;
    return prefix.subarray(headerEnd + 1 + NONCE_BYTES);
  }

  #take(data: Buffer, callback: TransformCallback): void {
    try {
      let offset = 0;
      while (offset < data.length) {
        if (this.#filled === this.#staged.length) this.#open(false);
        const n = data.copy(this.#staged, this.#filled, offset);
        this.#filled += n;
        offset += n;
      }
      callback();
    } catch (error) {
      callback(error as Error);
    }
  }

  override _flush(callback: TransformCallback): void {
    try {
      if (!this.#key) throw new AgeDecryptError('truncated age file: it ends inside the header');
      if (this.#filled < TAG_BYTES)
        throw new AgeDecryptError('truncated age file: the last chunk is incomplete');
      if (this.#filled === TAG_BYTES && this.#counter > 0) {
        throw new AgeDecryptError('invalid age file: empty last chunk after data');
      }
      this.#open(true);
      callback();
    } catch (error) {
      callback(error as Error);
    }
  }

  #open(last: boolean): void {
    const decipher = createDecipheriv(
      'chacha20-poly1305',
      this.#key as KeyObject,
      chunkNonce(this.#counter, last),
      {
        authTagLength: TAG_BYTES,
      },
    );
    decipher.setAuthTag(this.#staged.subarray(this.#filled - TAG_BYTES, this.#filled));
    const plain = decipher.update(this.#staged.subarray(0, this.#filled - TAG_BYTES));
    try {
      decipher.final();
    } catch (cause) {
      throw new AgeDecryptError(
        `payload chunk ${this.#counter} failed authentication: the object is corrupted or truncated`,
        { cause },
      );
    }
    this.#counter++;
    this.#filled = 0;
    this.push(plain);
  }
}

/**
 * WAL bundles: one object at a replication target holding several WAL segments of one cluster and
 * timeline, so a target stores (and is charged for) one PUT per run instead of one per segment
 * (docs/architecture.md, "WAL bundles at targets"). Ingest keeps one object per segment; only the
 * pipeline writes bundles, only at targets, and never rewrites one.
 *
 *   v1/<cluster>/wal-bundles/<timeline>/<last wal name>-<first wal name>-<digest>.pgkb   (core/keys.ts)
 *
 * Keys sort by the last segment, so one listing with StartAfter `<name>` reaches the bundle
 * holding `<name>` first. The body is the members' ciphertext exactly as ingest holds it
 * (concatenated age files: the pipeline cannot decrypt), then a JSON index, then a fixed-size
 * locator, so a reader gets the index with one small ranged GET of the object's tail:
 *
 *   member bytes … | index JSON | "PGKB1IDX" + index offset (u64 BE) + index length (u64 BE)
 *
 * The index names each member's ingest key, offset, length and ciphertext sha256. The key carries a
 * digest of the members' keys and lengths (known before any byte is read, so a bundle is streamed
 * to its final key in one pass): an index naming other members or lengths is found before any
 * member is read, and a changed member, or a changed sha256 in the index, by the member's sha256.
 * Pure: no I/O.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { parseWalBundleKey, parseWalKey, walBundleKey, walPrefix } from './keys.ts';

export { type ParsedBundleKey, parseWalBundleKey, walBundlesPrefix } from './keys.ts';

import { parseWalFileName } from './wal-names.ts';

const LOCATOR_MAGIC = Buffer.from('PGKB1IDX', 'ascii');
/** Bytes of the locator at the end of every bundle. */
export const LOCATOR_BYTES = LOCATOR_MAGIC.length + 16;
/** Hex digits of the index's sha256 in the key. */
const INDEX_DIGEST_HEX = 16;
/** Segments per bundle at most: bounds the index and how far a reader looks past a name. */
export const MAX_BUNDLE_MEMBERS = 256;

/** A bundle found invalid: its key, index or a member's bytes are not what the pipeline wrote. */
export class BundleIntegrityError extends Error {
  override name = 'BundleIntegrityError';
}

export interface BundleMember {
  /** The segment's key in ingest (`v1/<cluster>/wal/<timeline>/<name>-<hash>.zst.age`). */
  readonly key: string;
  /** Byte offset of its ciphertext in the bundle. */
  readonly offset: number;
  readonly length: number;
  /** sha256 (hex) of its ciphertext. */
  readonly sha256: string;
}

const IndexSchema = z.strictObject({
  format: z.literal('pgkeep.wal-bundle.v1'),
  members: z
    .array(
      z.strictObject({
        key: z.string().min(1),
        offset: z.number().int().nonnegative(),
        length: z.number().int().nonnegative(),
        sha256: z.string().regex(/^[0-9a-f]{64}$/),
      }),
    )
    .min(1)
    .max(MAX_BUNDLE_MEMBERS),
});

/** The digest in a bundle's key: of its members' keys and lengths, in order. */
export function bundleDigest(members: readonly { readonly key: string; readonly length: number }[]): string {
  const hash = createHash('sha256');
  for (const m of members) hash.update(`${m.key}\n${m.length}\n`);
  return hash.digest('hex').slice(0, INDEX_DIGEST_HEX);
}

/** The key of the bundle of `members` (ascending keys of one cluster and timeline, `first` to `last`). */
export function bundleKeyOf(
  cluster: string,
  timeline: string,
  first: string,
  last: string,
  members: readonly { readonly key: string; readonly length: number }[],
): string {
  return walBundleKey(cluster, timeline, first, last, bundleDigest(members));
}

/** Whether a WAL key may go into a bundle: a whole segment (not .history, .partial or .backup). */
export function isBundleableWalKey(key: string): boolean {
  const parsed = parseWalKey(key);
  return parsed !== undefined && parseWalFileName(parsed.walFileName)?.kind === 'segment';
}

/** The index bytes of members laid out one after another from offset 0, in the order given. */
export function encodeBundleIndex(members: readonly Omit<BundleMember, 'offset'>[]): {
  readonly index: Buffer;
  readonly members: BundleMember[];
} {
  let offset = 0;
  const placed = members.map((m) => {
    const member = { key: m.key, offset, length: m.length, sha256: m.sha256 };
    offset += m.length;
    return member;
  });
  return {
    index: Buffer.from(JSON.stringify({ format: 'pgkeep.wal-bundle.v1', members: placed })),
    members: placed,
  };
}

/** The index followed by its locator: what goes after the members' bytes. */
export function bundleTail(index: Buffer, membersBytes: number): Buffer {
  const locator = Buffer.alloc(LOCATOR_BYTES);
  LOCATOR_MAGIC.copy(locator, 0);
  locator.writeBigUInt64BE(BigInt(membersBytes), LOCATOR_MAGIC.length);
  locator.writeBigUInt64BE(BigInt(index.length), LOCATOR_MAGIC.length + 8);
  return Buffer.concat([index, locator]);
}

/** Where the index is, from the locator (the bundle's last {@link LOCATOR_BYTES} bytes). */
export function parseLocator(
  key: string,
  locator: Buffer,
  sizeBytes: number,
): { readonly offset: number; readonly length: number } {
  if (locator.length !== LOCATOR_BYTES || !locator.subarray(0, LOCATOR_MAGIC.length).equals(LOCATOR_MAGIC))
    throw new BundleIntegrityError(
      `WAL bundle ${key} does not end with a bundle locator: it was changed or cut short at the target; restore from another target`,
    );
  const offset = Number(locator.readBigUInt64BE(LOCATOR_MAGIC.length));
  const length = Number(locator.readBigUInt64BE(LOCATOR_MAGIC.length + 8));
  if (offset + length + LOCATOR_BYTES !== sizeBytes)
    throw new BundleIntegrityError(
      `WAL bundle ${key} has ${sizeBytes} bytes but its locator places the index at ${offset}+${length}: the object was changed at the target; restore from another target`,
    );
  return { offset, length };
}

/**
 * The members of the bundle at `key`, from its index bytes: checked against the digest in the key,
 * and every member checked to be a segment of the bundle's cluster and timeline within its range,
 * laid out without gaps or overlaps before the index.
 */
export function parseBundleIndex(key: string, index: Buffer, indexOffset: number): BundleMember[] {
  const parsedKey = parseWalBundleKey(key);
  if (!parsedKey) throw new BundleIntegrityError(`${key} is not a WAL bundle key`);
  let json: unknown;
  try {
    json = JSON.parse(index.toString('utf8'));
  } catch (error) {
    throw new BundleIntegrityError(`WAL bundle ${key}: its index is not JSON`, { cause: error });
  }
  const parsed = IndexSchema.safeParse(json);
  if (!parsed.success)
    throw new BundleIntegrityError(`WAL bundle ${key}: invalid index (${parsed.error.issues[0]?.message})`);
  const digest = bundleDigest(parsed.data.members);
  if (digest !== parsedKey.digest)
    throw new BundleIntegrityError(
      `WAL bundle ${key}: its index names members that digest to ${digest}, not to the ${parsedKey.digest} in its key; the bundle was changed at the target; restore from another target`,
    );
  const prefix = walPrefix(parsedKey.cluster, parsedKey.timeline);
  let expectedOffset = 0;
  let previous = '';
  for (const member of parsed.data.members) {
    const wal = parseWalKey(member.key);
    if (
      !member.key.startsWith(prefix) ||
      !wal ||
      !isBundleableWalKey(member.key) ||
      wal.walFileName < parsedKey.first ||
      wal.walFileName > parsedKey.last ||
      member.key <= previous ||
      member.offset !== expectedOffset
    )
      throw new BundleIntegrityError(
        `WAL bundle ${key}: member ${member.key} at ${member.offset} is not a segment of ${prefix} from ${parsedKey.first} to ${parsedKey.last} in order`,
      );
    previous = member.key;
    expectedOffset += member.length;
  }
  if (expectedOffset !== indexOffset)
    throw new BundleIntegrityError(
      `WAL bundle ${key}: its members end at byte ${expectedOffset} but the index starts at ${indexOffset}`,
    );
  return parsed.data.members;
}

/** The timeline folder and WAL file name a WAL key is stored under, for finding its bundle. */
export function walNameOfKey(key: string): { readonly timeline: string; readonly name: string } | undefined {
  const parsed = parseWalKey(key);
  return parsed ? { timeline: parsed.walFileName.slice(0, 8), name: parsed.walFileName } : undefined;
}

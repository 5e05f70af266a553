/**
 * WAL bundles in the copy path (core/wal-bundle.ts; docs/architecture.md, "WAL bundles at
 * targets"). For a target with `walBundles`, the hot path's settled WAL segments of a cluster and
 * timeline go to the target as one object: their bytes are read from ingest, one GET each, and
 * checked as any copy's are (the size ingest listed, and the provider's sha256 when ingest has
 * one, from the GET's own answer: no HEAD first), and the
 * bundle is streamed to its final key in one pass, create-only, then confirmed by a read of its
 * index (a ranged GET of the tail). Nothing a host writes decides what a bundle holds: the planner names the keys,
 * every member is pinned by the sha256 of the bytes read, and a bundle is never replaced (an
 * existing bundle at the key with other bytes is a conflict, reported and kept).
 *
 * A member already at the target (in a bundle, or as its own object) is checked there by
 * {@link checkPresentMember}: a reconciliation or a verify run never copies bundled WAL again.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { walPrefix } from '../../core/keys.ts';
import {
  BundleIntegrityError,
  bundleKeyOf,
  bundleTail,
  encodeBundleIndex,
  isBundleableWalKey,
  LOCATOR_BYTES,
  MAX_BUNDLE_MEMBERS,
  walNameOfKey,
} from '../../core/wal-bundle.ts';
import { S3Storage } from '../../storage/s3-storage.ts';
import {
  ObjectExistsError,
  type ObjectInfo,
  ObjectNotFoundError,
  StorageError,
} from '../../storage/storage.ts';
import type { ExpectedMembers, LocatedMember, WalBundleStorage } from '../../storage/wal-bundles.ts';
import type { Location } from '../lib/locations.ts';
import { CopyIntegrityError, objectIn, SourceChangedError, TargetConflictError } from '../lib/s3-copy.ts';
import type { ExpectedObject } from '../lib/verify-copy.ts';
import { type IngestObject, readIngest } from './ingest-objects.ts';

/** One member to bundle: the ingest object and what its bytes must match. */
export interface BundleCandidate {
  readonly object: IngestObject;
  readonly expected: ExpectedObject;
}

export interface WrittenBundle {
  readonly key: string;
  /** The bundle was already at the target, with the same size (a retried step): nothing written. */
  readonly existed: boolean;
  readonly members: number;
  readonly bytes: number;
}

/** Splits a timeline's candidates (ascending) into bundles of at most {@link MAX_BUNDLE_MEMBERS}. */
export function bundleChunks<T>(candidates: readonly T[]): T[][] {
  const chunks: T[][] = [];
  for (let i = 0; i < candidates.length; i += MAX_BUNDLE_MEMBERS)
    chunks.push(candidates.slice(i, i + MAX_BUNDLE_MEMBERS));
  return chunks;
}

/**
 * Writes the bundle of `candidates` (one cluster and timeline, ascending keys, at most
 * {@link MAX_BUNDLE_MEMBERS}) to `target`. A member whose bytes do not match rejects the whole
 * bundle before anything is visible at the target (CopyIntegrityError or SourceChangedError).
 */
export async function writeWalBundle(
  ingest: Location,
  target: Location,
  bundles: WalBundleStorage,
  cluster: string,
  candidates: readonly BundleCandidate[],
): Promise<WrittenBundle> {
  const first = walNameOfKey(candidates[0]?.object.key ?? '');
  const last = walNameOfKey(candidates[candidates.length - 1]?.object.key ?? '');
  if (!first || !last || first.timeline !== last.timeline)
    throw new Error(
      `a WAL bundle needs segments of one timeline; got ${candidates.map((c) => c.object.key).join(', ')}`,
    );
  const lengths = candidates.map((c) => ({ key: c.object.key, length: c.expected.sizeBytes }));
  const key = bundleKeyOf(cluster, first.timeline, first.name, last.name, lengths);
  const hashes: string[] = [];
  const membersBytes = lengths.reduce((n, m) => n + m.length, 0);
  async function* body(): AsyncIterable<Buffer> {
    for (const { object, expected } of candidates) {
      const read = await readIngest(objectIn(ingest.storage, object.key), object.key, expected.sizeBytes);
      const hash = createHash('sha256');
      let size = 0;
      for await (const chunk of read.body) {
        hash.update(chunk);
        size += chunk.length;
        if (size > expected.sizeBytes) break;
        yield chunk;
      }
      const sha256 = hash.digest('hex');
      if (size !== expected.sizeBytes)
        throw new SourceChangedError(
          `ingest ${object.key} read as ${size > expected.sizeBytes ? 'more than' : ''} ${size} bytes, but was listed with ${expected.sizeBytes}; the next run lists it again`,
        );
      // A plan without sizes brings a HEAD's checksum; the GET's own answer is checked in any case.
      const mismatch =
        expected.sha256 !== undefined && sha256 !== expected.sha256
          ? `${expected.sha256} was expected`
          : read.providerSha256 !== undefined && sha256 !== read.providerSha256
            ? `ingest's checksum for it is ${read.providerSha256}`
            : undefined;
      if (mismatch)
        throw new CopyIntegrityError(
          `ingest ${object.key} read with sha256 ${sha256}, but ${mismatch}; nothing was written, the next run copies it again`,
        );
      hashes.push(sha256);
    }
    const { index } = encodeBundleIndex(lengths.map((m, i) => ({ ...m, sha256: hashes[i] as string })));
    yield bundleTail(index, membersBytes);
  }
  let existed = false;
  // As every copy: If-None-Match only where the target is known to honour it, a HEAD first anyway.
  const writer =
    target.conditionalWrites === true
      ? target.storage
      : new S3Storage(
          { bucket: target.storage.bucket, prefix: target.storage.prefix, conditionalWrites: false },
          target.storage.client,
        );
  // The index's length depends only on its keys and lengths, so the bundle's size is known before
  // any member is read: it goes in one streamed PutObject, not a multipart upload of 16 MiB parts.
  const { index: sized } = encodeBundleIndex(lengths.map((m) => ({ ...m, sha256: '0'.repeat(64) })));
  const stored = { key, sizeBytes: membersBytes + sized.length + LOCATOR_BYTES, lastModified: new Date() };
  try {
    await writer.put(key, Readable.from(body()), { ifAbsent: true, sizeBytes: stored.sizeBytes });
  } catch (error) {
    if (!(error instanceof ObjectExistsError)) throw error;
    existed = true;
  }
  // Confirm what is at the key with one read of its tail: an index naming exactly these members
  // and bytes, at the size they make.
  let members: LocatedMember[];
  try {
    members = await bundles.bundleMembers(stored);
  } catch (error) {
    if (error instanceof ObjectNotFoundError)
      throw new CopyIntegrityError(`WAL bundle ${key} is not at ${target.name} after it was written`);
    // A plain StorageError here: the object is shorter than these members make (a range past its end).
    const shorter = error instanceof StorageError && error.name === 'StorageError';
    if (!(error instanceof BundleIntegrityError || shorter)) throw error;
    throw new TargetConflictError(
      key,
      `${error.message}; the bundle is kept and not replaced: find out who wrote it at ${target.name}`,
    );
  }
  // A bundle found at its key is compared with what was read when the driver read the body anyway.
  const same =
    members.length === candidates.length &&
    members.every(
      (m, i) => m.key === lengths[i]?.key && (hashes.length !== lengths.length || m.sha256 === hashes[i]),
    );
  if (!same)
    throw new TargetConflictError(
      key,
      `WAL bundle ${key} at ${target.name} holds other members than were bundled; it is kept and not replaced`,
    );
  return { key, existed, members: members.length, bytes: existed ? 0 : stored.sizeBytes };
}

/**
 * For a WAL key already in a bundle at the target: `skipped` when the member matches `expected`
 * (its size, and with a sha256 the member's bytes, read and checked against the index);
 * undefined when no bundle holds it. A member with other bytes is a conflict: kept, not replaced.
 */
export async function checkPresentMember(
  bundles: WalBundleStorage,
  key: string,
  expected: ExpectedObject,
): Promise<'skipped' | undefined> {
  try {
    const member = await bundles.findMember(key);
    if (!member) return undefined;
    let sha256 = member.sha256;
    if (expected.sha256 !== undefined) {
      const hash = createHash('sha256');
      for await (const chunk of await bundles.get(key)) hash.update(chunk as Buffer);
      sha256 = hash.digest('hex');
    }
    if (member.length !== expected.sizeBytes || (expected.sha256 !== undefined && sha256 !== expected.sha256))
      throw new TargetConflictError(
        key,
        `WAL bundle ${member.bundle} holds ${key} with ${member.length} bytes and sha256 ${sha256}, but ingest has ${expected.sizeBytes} bytes${expected.sha256 ? ` with sha256 ${expected.sha256}` : ''}; the bundle is kept and not replaced`,
      );
    return 'skipped';
  } catch (error) {
    // A bundle changed at the provider: reported like any copy with other bytes, never replaced.
    if (error instanceof BundleIntegrityError)
      throw new TargetConflictError(key, `${error.message}; the bundle is kept and not replaced`);
    throw error;
  }
}

/**
 * For the reconciliation: the segments of `objects` (one cluster's ingest listing, ascending) in
 * a bundle's range, which are its members when they digest to its key (storage/wal-bundles.ts).
 */
export function segmentsInRange(objects: readonly ObjectInfo[]): ExpectedMembers {
  const segments = objects.filter((o) => isBundleableWalKey(o.key));
  return (bundle) => {
    const from = `${walPrefix(bundle.cluster, bundle.timeline)}${bundle.first}`;
    let lo = 0;
    let hi = segments.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((segments[mid] as ObjectInfo).key < from) lo = mid + 1;
      else hi = mid;
    }
    const found: { key: string; length: number }[] = [];
    for (let i = lo; i < segments.length; i++) {
      const object = segments[i] as ObjectInfo;
      const wal = walNameOfKey(object.key);
      if (!wal || wal.timeline !== bundle.timeline || wal.name > bundle.last) break;
      found.push({ key: object.key, length: object.sizeBytes });
    }
    return found;
  };
}

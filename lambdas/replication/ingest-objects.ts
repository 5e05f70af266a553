/**
 * What a copy of an ingest object must match, and the reads of ingest that tell it: one HEAD for
 * the size and the provider's checksum, the manifest's entry for a backup object, and a streamed
 * sha256 when nothing else vouches (see ./copy-batch.ts).
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { GetObjectCommand, HeadObjectCommand, type HeadObjectCommandOutput } from '@aws-sdk/client-s3';
import { isBackupId, manifestKey } from '../../core/keys.ts';
import type { ValidatedManifest } from '../../core/manifest.ts';
import { isStoredManifest, readManifestOrReject } from '../../storage/manifests.ts';
import { type ObjectInfo, ObjectNotFoundError } from '../../storage/storage.ts';
import type { Location } from '../lib/locations.ts';
import { objectIn, type S3ObjectRef, SourceChangedError } from '../lib/s3-copy.ts';
import { type ExpectedObject, isNotFound } from '../lib/verify-copy.ts';

/** The backup id in a backup object's key (`…/base/<id>/…`, `…/logical/<db>/<id>/…`), if any. */
function backupIdOfObjectKey(key: string): string | undefined {
  const m = /\/(?:base|logical\/[^/]+)\/([^/]+)\//.exec(key);
  return m?.[1] && isBackupId(m[1]) ? m[1] : undefined;
}

/** sha256 (hex) of an object, streamed: memory does not grow with its size. */
async function sha256Of(object: S3ObjectRef): Promise<string> {
  const out = await object.client.send(new GetObjectCommand({ Bucket: object.bucket, Key: object.key }));
  const hash = createHash('sha256');
  await pipeline(out.Body as Readable, async (source: AsyncIterable<Buffer>) => {
    for await (const chunk of source) hash.update(chunk);
  });
  return hash.digest('hex');
}

/** An ingest object, with the provider's full-object SHA-256 (hex) when a HEAD already asked for it. */
export interface IngestObject extends ObjectInfo {
  /** Looked up: the provider's sha256, or `null` when it computed none. Absent: not looked up yet. */
  readonly providerSha256?: string | null;
}

/**
 * One HEAD of an ingest object for its size and the provider's full-object SHA-256 (when it
 * computed one); `undefined` when the object does not exist.
 */
export async function headIngest(object: S3ObjectRef, key: string): Promise<IngestObject | undefined> {
  let head: HeadObjectCommandOutput;
  try {
    head = await object.client.send(
      new HeadObjectCommand({ Bucket: object.bucket, Key: object.key, ChecksumMode: 'ENABLED' }),
    );
  } catch (error) {
    if (isNotFound(error)) return undefined;
    throw error;
  }
  const full = head.ChecksumSHA256 && head.ChecksumType !== 'COMPOSITE';
  return {
    key,
    sizeBytes: head.ContentLength ?? 0,
    lastModified: head.LastModified ?? new Date(0),
    providerSha256: full ? Buffer.from(head.ChecksumSHA256 as string, 'base64').toString('hex') : null,
  };
}

/** Finds what each object must match: the manifest's entry for backup objects (manifests read once each). */
export function expectations(ingest: Location, cluster: string) {
  const manifests = new Map<string, Promise<ValidatedManifest | undefined>>();
  const manifestOf = (backupId: string) => {
    let manifest = manifests.get(backupId);
    if (!manifest) {
      const key = manifestKey(cluster, backupId);
      // A manifest not written yet, or rejected as untrustworthy, vouches for nothing: the object
      // is then checked like WAL (and the rejection is reported by "Copy and verify manifests").
      manifest = (async () => {
        try {
          const read = await readManifestOrReject(ingest.storage, key);
          return isStoredManifest(read) ? read.manifest : undefined;
        } catch (error) {
          if (error instanceof ObjectNotFoundError) return undefined;
          throw error;
        }
      })();
      manifests.set(backupId, manifest);
    }
    return manifest;
  };
  return async (object: IngestObject, verify: boolean): Promise<ExpectedObject> => {
    const backupId = backupIdOfObjectKey(object.key);
    const entry = backupId
      ? (await manifestOf(backupId))?.objects.find((o) => o.key === object.key)
      : undefined;
    if (entry) {
      if (entry.sizeBytes !== object.sizeBytes)
        throw new SourceChangedError(
          `ingest ${object.key} has ${object.sizeBytes} bytes, its manifest says ${entry.sizeBytes}`,
        );
      return { sizeBytes: entry.sizeBytes, sha256: entry.sha256 };
    }
    const source = objectIn(ingest.storage, object.key);
    const provider =
      object.providerSha256 !== undefined
        ? object.providerSha256
        : (await headIngest(source, object.key))?.providerSha256;
    if (provider) return { sizeBytes: object.sizeBytes, sha256: provider };
    // Without `verify`, the copy is checked against the sha256 of the bytes it streamed.
    return verify
      ? { sizeBytes: object.sizeBytes, sha256: await sha256Of(source) }
      : { sizeBytes: object.sizeBytes };
  };
}

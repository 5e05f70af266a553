/**
 * What a copy of an ingest object must match, and the reads of ingest that tell it: one HEAD for
 * the size and the provider's checksum, the manifest's entry for a backup object, and a streamed
 * sha256 when nothing else vouches (see ./copy-batch.ts); and the GET that reads a bundle member
 * whose size the plan's own listing gave, which brings the provider's checksum along instead.
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  GetObjectCommand,
  type GetObjectCommandOutput,
  HeadObjectCommand,
  type HeadObjectCommandOutput,
} from '@aws-sdk/client-s3';
import { isBackupId, manifestKey } from '../../core/keys.ts';
import type { ValidatedManifest } from '../../core/manifest.ts';
import { isStoredManifest, readManifestOrReject } from '../../storage/manifests.ts';
import { type ObjectInfo, ObjectNotFoundError } from '../../storage/storage.ts';
import type { Location } from '../lib/locations.ts';
import { objectIn, type S3ObjectRef, SourceChangedError } from '../lib/s3-copy.ts';
import { providerSha256Of, where } from '../lib/s3-object.ts';
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
  /**
   * `sizeBytes` is what the plan's own listing of ingest gave (never a host-written object): nothing
   * was asked of ingest yet, and the GET that reads the bytes checks them ({@link readIngest}).
   */
  readonly listed?: true;
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
  return {
    key,
    sizeBytes: head.ContentLength ?? 0,
    lastModified: head.LastModified ?? new Date(0),
    providerSha256: providerSha256Of(head) ?? null,
  };
}

/** The bytes of an ingest object as {@link readIngest} read them. */
export interface IngestRead {
  readonly body: AsyncIterable<Buffer>;
  /** The provider's full-object SHA-256 (hex) from the GET's own answer; undefined when it has none. */
  readonly providerSha256?: string;
}

/**
 * One GET of the ingest object `key` that also asks for the provider's checksum, so no HEAD is
 * needed first. Its length must be `sizeBytes` (what it was listed with), else a
 * SourceChangedError before any byte is read; a missing object is one too (the next run lists
 * again). The caller hashes the bytes and compares them with `providerSha256`.
 */
export async function readIngest(object: S3ObjectRef, key: string, sizeBytes: number): Promise<IngestRead> {
  let answer: GetObjectCommandOutput;
  try {
    answer = await object.client.send(getAskingChecksum(object));
  } catch (error) {
    if (isNotFound(error))
      throw new SourceChangedError(
        `ingest ${key} is gone since it was listed (${where(object)}); nothing was written, the next run lists again`,
        { cause: error },
      );
    throw error;
  }
  const body = answer.Body as Readable;
  if (answer.ContentLength !== sizeBytes) {
    body.destroy();
    throw new SourceChangedError(
      `ingest ${key} is ${answer.ContentLength} bytes, but was listed with ${sizeBytes}: it changed since; nothing was written, the next run lists it again`,
    );
  }
  const providerSha256 = providerSha256Of(answer);
  return { body, ...(providerSha256 ? { providerSha256 } : {}) };
}

/**
 * A GetObject that asks for the provider's checksum (the `x-amz-checksum-mode` header) without the
 * SDK checking it too, which `ChecksumMode` would make it do. The caller hashes every byte with
 * sha256 anyway and compares it with a SHA-256 the provider stored. What S3 stores for an object
 * uploaded without a checksum (the agent sends none) is a CRC64NVME, which the SDK computes in
 * JavaScript: ~90 ms of CPU per 16 MiB measured here against ~10 ms for the sha256, most of a
 * bundled segment's Lambda time at 512 MB, to prove again what TLS already proves of the transfer.
 */
function getAskingChecksum(object: S3ObjectRef): GetObjectCommand {
  const command = new GetObjectCommand({ Bucket: object.bucket, Key: object.key });
  command.middlewareStack.add(
    (next) => (args) => {
      (args.request as { headers: Record<string, string> }).headers['x-amz-checksum-mode'] = 'ENABLED';
      return next(args);
    },
    { step: 'build', name: 'askProviderChecksum' },
  );
  return command;
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

/**
 * Where the pipeline reads and writes: the ingest bucket and each target, as repository drivers
 * (storage/s3-storage.ts) so keys are repository-relative (`v1/<cluster>/…`) everywhere, plus the one
 * thing the Storage interface does not offer: listing from a given key on (S3's StartAfter), which
 * lets a batch be described by a key range instead of a key list.
 */
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { createS3Client, S3Storage } from '../../storage/s3-storage.ts';
import type { ObjectInfo } from '../../storage/storage.ts';
import { honoursIfNoneMatch, INGEST_LOCATION, type PipelineEnv, type RuntimeTarget } from './pipeline-env.ts';
import { type CredentialsReader, readSecretsManagerCredentials } from './secrets.ts';

/** A bucket (and prefix) the pipeline works on. */
export interface Location {
  /** `ingest` or the target's name, for messages and metrics. */
  readonly name: string;
  readonly storage: S3Storage;
  /**
   * The bucket refuses a create-only PutObject (`If-None-Match: *`) when the key exists: copies
   * send the header, and keys a listing showed absent need no HEAD first. @default false
   */
  readonly conditionalWrites?: boolean;
}

/** How handlers reach buckets; tests point it at local S3-compatible servers. */
export interface LocationFactory {
  ingest(): Promise<Location>;
  /**
   * The target, reached for `purpose`: `delete` uses the target's delete-capable key where it has
   * one (retention's delete step is the only caller, and the only role that may read it).
   * @default 'copy'
   */
  target(target: RuntimeTarget, purpose?: TargetPurpose): Promise<Location>;
}

/** Why a step reaches a target: copying (and reading) or deleting. */
export type TargetPurpose = 'copy' | 'delete';

function withSlash(prefix: string): string {
  return prefix === '' || prefix.endsWith('/') ? prefix : `${prefix}/`;
}

/** The production factory: ingest and AWS targets with the Lambda's role, S3-compatible targets with their secret. */
export function awsLocations(
  env: PipelineEnv,
  readCredentials: CredentialsReader = readSecretsManagerCredentials,
): LocationFactory {
  const cache = new Map<string, Promise<Location>>();
  const once = (key: string, make: () => Promise<Location>) => {
    let location = cache.get(key);
    if (!location) {
      location = make();
      // A failed credentials read must not be cached for the life of the container.
      location.catch(() => cache.delete(key));
      cache.set(key, location);
    }
    return location;
  };
  return {
    ingest: () =>
      once(INGEST_LOCATION, async () => ({
        name: INGEST_LOCATION,
        storage: new S3Storage(
          { bucket: env.ingestBucket, region: env.ingestRegion, checksum: 'when-supported' },
          createS3Client({ region: env.ingestRegion, checksum: 'when-supported' }),
        ),
      })),
    target: (target, purpose = 'copy') =>
      once(`target:${target.name}:${purpose}`, async () => {
        const prefix = withSlash(target.prefix);
        if (target.type === 'aws-s3') {
          const options = {
            bucket: target.bucket,
            prefix,
            region: target.region,
            checksum: 'when-supported' as const,
          };
          return {
            name: target.name,
            storage: new S3Storage(options, createS3Client(options)),
            conditionalWrites: honoursIfNoneMatch(target),
          };
        }
        const secretArn =
          purpose === 'delete'
            ? (target.deleteCredentialsSecretArn ?? target.credentialsSecretArn)
            : target.credentialsSecretArn;
        const credentials = await readCredentials(secretArn);
        const options = {
          bucket: target.bucket,
          prefix,
          region: target.region,
          endpoint: target.endpoint,
          forcePathStyle: target.forcePathStyle,
        };
        const client = createS3Client(options, credentials);
        return {
          name: target.name,
          storage: new S3Storage(options, client),
          conditionalWrites: honoursIfNoneMatch(target),
        };
      }),
  };
}

/**
 * Objects under `prefix` (repository-relative) with keys after `startAfter`, ascending, stopping
 * after `lastKey` when given. Errors come from the SDK; callers map them with mapTransient (storage/failure.ts).
 */
export async function* listFrom(
  location: Location,
  prefix: string,
  startAfter?: string,
  lastKey?: string,
): AsyncIterable<ObjectInfo> {
  const { storage } = location;
  let continuationToken: string | undefined;
  do {
    const page = await storage.client.send(
      new ListObjectsV2Command({
        Bucket: storage.bucket,
        Prefix: storage.prefix + prefix,
        StartAfter: continuationToken || !startAfter ? undefined : storage.prefix + startAfter,
        ContinuationToken: continuationToken,
      }),
    );
    for (const item of page.Contents ?? []) {
      if (!item.Key) continue;
      const key = item.Key.slice(storage.prefix.length);
      if (lastKey !== undefined && key > lastKey) return;
      yield { key, sizeBytes: item.Size ?? 0, lastModified: item.LastModified ?? new Date(0) };
    }
    continuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (continuationToken);
}

/**
 * Merges two ascending listings: yields every object of `source` that `destination` lacks
 * (`absent`) or holds with a different size. Memory stays constant whatever the number of objects.
 */
export async function* missingAt(
  source: Iterable<ObjectInfo> | AsyncIterable<ObjectInfo>,
  destination: AsyncIterable<ObjectInfo>,
): AsyncIterable<ObjectInfo & { readonly absent: boolean }> {
  const dest = destination[Symbol.asyncIterator]();
  let next = await dest.next();
  for await (const object of source) {
    while (!next.done && next.value.key < object.key) next = await dest.next();
    const absent = next.done || next.value.key !== object.key;
    if (absent || next.value.sizeBytes !== object.sizeBytes) yield { ...object, absent };
  }
}

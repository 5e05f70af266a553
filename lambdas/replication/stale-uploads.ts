/**
 * Orphaned multipart uploads at a target: a copy cut short by a provider outage leaves parts
 * behind (and billed); the reconciliation aborts them (./plan-copies.ts).
 */
import { AbortMultipartUploadCommand, ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import type { Location } from '../lib/locations.ts';

/**
 * Multipart uploads older than this are orphans: the replication state machine times out after 2
 * hours, so no execution still owns one (a provider killed mid-copy could not be told to abort).
 */
export const STALE_UPLOAD_MS = 3 * 60 * 60 * 1000;

/**
 * Aborts the target's multipart uploads under `prefix` started before `now - STALE_UPLOAD_MS`, so
 * a copy cut short by a provider outage leaves no parts behind (and billed). Best effort: a
 * provider without ListMultipartUploads (or a role without s3:ListBucketMultipartUploads) only
 * leaves them to the bucket's lifecycle rule; what happened is in the plan's output.
 */
export async function abortStaleUploads(
  target: Location,
  prefix: string,
  now: Date,
): Promise<{ aborted: number; error?: string }> {
  const { storage } = target;
  let aborted = 0;
  try {
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    do {
      const page = await storage.client.send(
        new ListMultipartUploadsCommand({
          Bucket: storage.bucket,
          Prefix: storage.prefix + prefix,
          KeyMarker: keyMarker,
          UploadIdMarker: uploadIdMarker,
        }),
      );
      for (const upload of page.Uploads ?? []) {
        if (!upload.Key || !upload.UploadId || !upload.Initiated) continue;
        if (now.getTime() - upload.Initiated.getTime() < STALE_UPLOAD_MS) continue;
        await storage.client.send(
          new AbortMultipartUploadCommand({
            Bucket: storage.bucket,
            Key: upload.Key,
            UploadId: upload.UploadId,
          }),
        );
        aborted += 1;
      }
      keyMarker = page.IsTruncated ? page.NextKeyMarker : undefined;
      uploadIdMarker = page.IsTruncated ? page.NextUploadIdMarker : undefined;
    } while (keyMarker);
    return { aborted };
  } catch (error) {
    return { aborted, error: (error as Error).name || 'Error' };
  }
}

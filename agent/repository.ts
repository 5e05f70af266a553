/**
 * What the agent reads from a repository: manifests, oldest first or by id, through the one reader
 * (storage/manifests.ts) that validates them. The agent refuses to go on past an untrustworthy
 * manifest: a restore or a listing that skipped it silently would hide that the repository was
 * tampered with.
 */
import { Readable } from 'node:stream';
import { isBackupId, manifestKey } from '../core/keys.ts';
import {
  compareManifests,
  InvalidManifestError,
  type Manifest,
  serializeManifest,
  type ValidatedManifest,
} from '../core/manifest.ts';
import {
  listManifests as listStoredManifests,
  readManifest as readStoredManifest,
} from '../storage/manifests.ts';
import { ClockSkewError, ObjectNotFoundError, type Storage } from '../storage/storage.ts';

/** A backup id that names no backup of the cluster. */
export class UnknownBackupError extends Error {
  override name = 'UnknownBackupError';
}

export async function readManifest(
  storage: Storage,
  cluster: string,
  backupId: string,
): Promise<ValidatedManifest> {
  if (!isBackupId(backupId)) {
    throw new UnknownBackupError(
      `"${backupId}" is not a backup id (they look like 20261122T021500Z-1a2b): run pgkeep list for the ids`,
    );
  }
  try {
    return (await readStoredManifest(storage, manifestKey(cluster, backupId))).manifest;
  } catch (error) {
    if (!(error instanceof ObjectNotFoundError)) throw error;
    throw new UnknownBackupError(
      `no backup ${backupId} of cluster "${cluster}" in ${storage.displayUrl}: run pgkeep list for the ids; a backup older than the pipeline's ingest.keepDays may have been pruned from ingest after every target got it: restore it from a target with --from TARGET (a name under targets in the config, or the target's URL)`,
      { cause: error },
    );
  }
}

/** Every backup of the cluster, oldest first; rejects with the first manifest that cannot be trusted. */
export async function listManifests(storage: Storage, cluster: string): Promise<ValidatedManifest[]> {
  const { manifests, rejected } = await listStoredManifests(storage, cluster);
  const first = rejected[0];
  if (first)
    throw new InvalidManifestError(
      `${first.reason}; remove or move the manifest (and find out who wrote it) before listing or restoring`,
    );
  return manifests.map((m) => m.manifest).sort(compareManifests);
}

/** Writes the manifest, create-only: this is the moment the backup comes to exist. */
export async function writeManifest(storage: Storage, manifest: Manifest): Promise<void> {
  await storage.put(
    manifestKey(manifest.cluster, manifest.backupId),
    Readable.from([serializeManifest(manifest)]),
    {
      ifAbsent: true,
    },
  );
}

/** How far the host clock may be from the repository's: S3's own limit for a request signature. */
export const MAX_CLOCK_SKEW_MS = 15 * 60_000;

/**
 * The start time of a new backup, its id's source (core/keys.ts newBackupId), after checking the
 * host clock against the repository's: a clock a day off would order backup ids wrongly, and a
 * restore by time would choose the wrong backup. `now`, when given (tests), is taken as it is.
 */
export async function backupStartTime(storage: Storage, now?: () => Date): Promise<Date> {
  if (now) return now();
  const server = await storage.serverTime?.();
  const host = new Date();
  if (server !== undefined) {
    const skewMs = host.getTime() - server.getTime();
    if (Math.abs(skewMs) > MAX_CLOCK_SKEW_MS) {
      const minutes = Math.round(Math.abs(skewMs) / 60_000);
      throw new ClockSkewError(
        `the host clock (${host.toISOString()}) is ${minutes} minutes ${skewMs > 0 ? 'ahead of' : 'behind'} ` +
          `the repository's (${server.toISOString()} at ${storage.displayUrl}), more than the ${MAX_CLOCK_SKEW_MS / 60_000} ` +
          'allowed: backup ids and times come from the host clock; set it right (NTP: timedatectl, chronyc tracking) and retry',
      );
    }
  }
  return host;
}

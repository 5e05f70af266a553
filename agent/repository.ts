/** Reading what a repository holds: manifests, newest first or by id. */
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { backupIdOfManifestKey, isBackupId, manifestKey, manifestsPrefix } from '../core/keys.ts';
import { compareManifests, type Manifest, parseManifest, serializeManifest } from '../core/manifest.ts';
import { ObjectNotFoundError, type Storage } from '../storage/storage.ts';

export async function readManifest(storage: Storage, cluster: string, backupId: string): Promise<Manifest> {
  if (!isBackupId(backupId)) {
    throw new UnknownBackupError(
      `"${backupId}" is not a backup id (they look like 20261122T021500Z-1a2b): run pgkeep list for the ids`,
    );
  }
  const key = manifestKey(cluster, backupId);
  try {
    return parseManifest(await text(await storage.get(key)), key);
  } catch (error) {
    if (!(error instanceof ObjectNotFoundError)) throw error;
    throw new UnknownBackupError(
      `no backup ${backupId} of cluster "${cluster}" in ${storage.displayUrl}: run pgkeep list for the ids`,
      { cause: error },
    );
  }
}

/** A backup id that names no backup of the cluster. */
export class UnknownBackupError extends Error {
  override name = 'UnknownBackupError';
}

/** Every backup of the cluster, oldest first. */
export async function listManifests(storage: Storage, cluster: string): Promise<Manifest[]> {
  const manifests: Manifest[] = [];
  for await (const object of storage.list(manifestsPrefix(cluster))) {
    const backupId = backupIdOfManifestKey(object.key);
    if (backupId) manifests.push(await readManifest(storage, cluster, backupId));
  }
  return manifests.sort(compareManifests);
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

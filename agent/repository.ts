/** Reading what a repository holds: manifests, newest first or by id. */
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { backupIdOfManifestKey, manifestKey, manifestsPrefix } from '../core/keys.ts';
import { type Manifest, parseManifest, serializeManifest } from '../core/manifest.ts';
import type { Storage } from '../storage/storage.ts';

export async function readManifest(storage: Storage, cluster: string, backupId: string): Promise<Manifest> {
  const key = manifestKey(cluster, backupId);
  return parseManifest(await text(await storage.get(key)), key);
}

/** Every backup of the cluster, oldest first. */
export async function listManifests(storage: Storage, cluster: string): Promise<Manifest[]> {
  const manifests: Manifest[] = [];
  for await (const object of storage.list(manifestsPrefix(cluster))) {
    const backupId = backupIdOfManifestKey(object.key);
    if (backupId) manifests.push(await readManifest(storage, cluster, backupId));
  }
  // Ids have second precision (and a random suffix); the start time, to the millisecond, orders
  // two backups taken in the same second.
  return manifests.sort(
    (a, b) => a.startTime.localeCompare(b.startTime) || a.backupId.localeCompare(b.backupId),
  );
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

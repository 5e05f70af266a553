/**
 * The marker a physical restore leaves in the data directory it lays down. A restored copy
 * inherits the production cluster's archive settings; were it started and promoted (a test
 * restore, a point-in-time copy), its new timeline's WAL and history file would go into the
 * production archive, and a later "restore to latest" could follow the copy instead of
 * production. So WAL from a marked data directory is refused unless the restore said where it may
 * archive, and `pgkeep promote-archive` removes the marker when the copy really is the new primary.
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const RESTORED_MARKER_FILE = 'pgkeep-restored.json';

/** What a restored data directory may archive into: nothing, its source cluster, or another cluster. */
export type ArchiveChoice =
  | { readonly mode: 'off' }
  | { readonly mode: 'keep' }
  | { readonly mode: 'new-cluster'; readonly cluster: string };

export interface RestoredMarker {
  /** The cluster the backup came from. */
  readonly cluster: string;
  readonly backupId: string;
  readonly restoredAt: string;
  readonly archive: ArchiveChoice;
}

/** A restored data directory tried to archive into a cluster its restore did not allow. */
export class RestoredDataDirError extends Error {
  override name = 'RestoredDataDirError';
}

export function restoredMarkerPath(dataDir: string): string {
  return join(dataDir, RESTORED_MARKER_FILE);
}

export async function writeRestoredMarker(dataDir: string, marker: RestoredMarker): Promise<void> {
  await writeFile(restoredMarkerPath(dataDir), `${JSON.stringify(marker, null, 2)}\n`, { mode: 0o600 });
}

/** The marker of `dataDir`, undefined when it has none; a marker that cannot be parsed still counts. */
export async function readRestoredMarker(
  dataDir: string,
): Promise<RestoredMarker | 'unreadable' | undefined> {
  let text: string;
  try {
    text = await readFile(restoredMarkerPath(dataDir), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    return 'unreadable';
  }
  try {
    const marker = JSON.parse(text) as RestoredMarker;
    return typeof marker.cluster === 'string' && typeof marker.archive?.mode === 'string'
      ? marker
      : 'unreadable';
  } catch {
    return 'unreadable';
  }
}

/** The cluster a marked data directory may archive into, undefined for none. */
export function allowedArchiveCluster(marker: RestoredMarker): string | undefined {
  if (marker.archive.mode === 'keep') return marker.cluster;
  if (marker.archive.mode === 'new-cluster') return marker.archive.cluster;
  return undefined;
}

/**
 * Throws {@link RestoredDataDirError} when `dataDir` was restored by pgkeep and its restore did
 * not allow archiving into `cluster`; resolves for any other data directory.
 */
export async function refuseRestoredDataDir(dataDir: string, cluster: string): Promise<void> {
  const marker = await readRestoredMarker(dataDir);
  if (marker === undefined) return;
  if (marker !== 'unreadable' && allowedArchiveCluster(marker) === cluster) return;
  const origin =
    marker === 'unreadable'
      ? `(its marker ${restoredMarkerPath(dataDir)} cannot be read)`
      : `from cluster "${marker.cluster}" (backup ${marker.backupId}, ${marker.restoredAt})`;
  throw new RestoredDataDirError(
    `data directory ${dataDir} was restored by pgkeep ${origin} and may not archive into cluster "${cluster}": ` +
      'a restored copy would fork that archive. If this copy is the new primary after a real failover, run ' +
      `"pgkeep promote-archive --pgdata ${dataDir}"; for a test copy, turn archive_mode off or restore it with ` +
      '--archive=new-cluster NAME',
  );
}

export async function removeRestoredMarker(dataDir: string): Promise<void> {
  await rm(restoredMarkerPath(dataDir), { force: true });
}

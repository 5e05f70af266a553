/**
 * Reading manifests from a repository: the one place that turns stored manifest bytes into a
 * {@link ValidatedManifest}, for the agent (list, restore) and every pipeline step (replication,
 * retention, freshness, verification). A manifest that is not valid JSON, does not match the
 * schema, or names keys outside its own backup is rejected here, never acted on.
 */
import { createHash } from 'node:crypto';
import { buffer } from 'node:stream/consumers';
import { backupIdOfManifestKey, manifestsPrefix } from '../core/keys.ts';
import {
  InvalidManifestError,
  parseManifest,
  type ValidatedManifest,
  validateManifest,
} from '../core/manifest.ts';
import { ObjectNotFoundError, type Storage } from './storage.ts';

export interface StoredManifest {
  readonly key: string;
  readonly manifest: ValidatedManifest;
  /** When the repository stored the manifest (its LastModified): a server time, not one the host wrote. */
  readonly storedAt: Date;
  /** The manifest's bytes as read, and their sha256: a copy is checked against these. */
  readonly bytes: Buffer;
  readonly sha256: string;
}

export interface RejectedManifest {
  readonly key: string;
  /** Why, for the run's output: the field or key that was wrong. */
  readonly reason: string;
}

/** What a listing says of a manifest: when the repository stored it, so no HEAD has to ask. */
export interface ListedManifest {
  readonly lastModified: Date;
}

/**
 * Reads and validates the manifest at `key`. Rejects with {@link InvalidManifestError} when it cannot
 * be trusted and {@link ObjectNotFoundError} when it is not there. With `listed` (the manifest as a
 * listing just showed it) its stored time is the listing's and the read is one GET; otherwise a HEAD
 * asks for it first. Manifests are written once (create-only), so the two agree.
 */
export async function readManifest(
  storage: Storage,
  key: string,
  listed?: ListedManifest,
): Promise<StoredManifest> {
  const storedAt = listed?.lastModified ?? (await storage.head(key))?.lastModified;
  if (!storedAt) throw new ObjectNotFoundError(key);
  const bytes = await buffer(await storage.get(key));
  const manifest = validateManifest(parseManifest(bytes.toString('utf8'), key), key);
  return {
    key,
    manifest,
    storedAt,
    bytes,
    sha256: createHash('sha256').update(bytes).digest('hex'),
  };
}

/** Reads a manifest, sorting an untrustworthy one into `rejected` instead of throwing. */
export async function readManifestOrReject(
  storage: Storage,
  key: string,
  listed?: ListedManifest,
): Promise<StoredManifest | RejectedManifest> {
  try {
    return await readManifest(storage, key, listed);
  } catch (error) {
    if (error instanceof InvalidManifestError) return { key, reason: error.message };
    throw error;
  }
}

export function isStoredManifest(value: StoredManifest | RejectedManifest): value is StoredManifest {
  return 'manifest' in value;
}

/**
 * Every manifest of `cluster` in `storage`, oldest backup id first, and the ones rejected (with
 * why). Storage failures reject; an untrustworthy manifest never does, so one forged manifest
 * cannot stop a run from acting on the others.
 */
export async function listManifests(
  storage: Storage,
  cluster: string,
): Promise<{ manifests: StoredManifest[]; rejected: RejectedManifest[] }> {
  const manifests: StoredManifest[] = [];
  const rejected: RejectedManifest[] = [];
  for await (const object of storage.list(manifestsPrefix(cluster))) {
    if (backupIdOfManifestKey(object.key) === undefined) continue;
    const read = await readManifestOrReject(storage, object.key, object);
    if (isStoredManifest(read)) manifests.push(read);
    else rejected.push(read);
  }
  manifests.sort((a, b) => a.manifest.backupId.localeCompare(b.manifest.backupId));
  return { manifests, rejected };
}

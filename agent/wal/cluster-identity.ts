/**
 * Which PostgreSQL cluster a cluster name belongs to: the local pg_control's system identifier,
 * and the binding stored in the repository the first time WAL is pushed.
 */
import { open, readFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { clusterIdentityKey } from '../../core/keys.ts';
import { parsePgControlSystemIdentifier } from '../../core/wal-segment-header.ts';
import { ObjectExistsError, ObjectNotFoundError, type Storage } from '../../storage/storage.ts';
import { type RetryPolicy, withRetry } from './retry.ts';
import { ForeignWalError } from './wal-errors.ts';

/** The system identifier in `<dataDir>/global/pg_control`, or undefined when it cannot be read. */
export async function localSystemIdentifier(dataDir: string): Promise<string | undefined> {
  const file = join(dataDir, 'global', 'pg_control');
  try {
    const handle = await open(file, 'r');
    try {
      const { buffer, bytesRead } = await handle.read(Buffer.alloc(8), 0, 8, 0);
      return parsePgControlSystemIdentifier(buffer.subarray(0, bytesRead), file);
    } finally {
      await handle.close();
    }
  } catch {
    return undefined;
  }
}

export function defaultDataDir(path: string): string | undefined {
  const abs = resolve(path);
  return basename(dirname(abs)) === 'pg_wal' ? dirname(dirname(abs)) : undefined;
}

interface ClusterIdentity {
  readonly cluster: string;
  readonly systemIdentifier: string;
  readonly createdAt: string;
}

/** The system identifier the cluster name is bound to, or undefined while no WAL was ever pushed under it. */
export async function readClusterIdentity(storage: Storage, cluster: string): Promise<string | undefined> {
  try {
    const body = await storage.get(clusterIdentityKey(cluster));
    const chunks: Buffer[] = [];
    for await (const chunk of body) chunks.push(chunk as Buffer);
    return (JSON.parse(Buffer.concat(chunks).toString('utf8')) as ClusterIdentity).systemIdentifier;
  } catch (error) {
    if (error instanceof ObjectNotFoundError) return undefined;
    throw error;
  }
}

/**
 * Binds the cluster name to `systemIdentifier` in the repository the first time, and refuses a
 * different identifier after that.
 */
export async function ensureClusterIdentity(
  storage: Storage,
  cluster: string,
  systemIdentifier: string,
  retry: RetryPolicy,
  cacheDir?: string,
): Promise<void> {
  const cacheFile = cacheDir && join(cacheDir, `system-identifier-${cluster}`);
  if (cacheFile) {
    const cached = await readFile(cacheFile, 'utf8').catch(() => undefined);
    if (cached?.trim() === systemIdentifier) return;
  }
  const key = clusterIdentityKey(cluster);
  const read = () => readClusterIdentity(storage, cluster);
  let stored = await withRetry(`reading ${key}`, retry, read);
  if (stored === undefined) {
    const identity: ClusterIdentity = { cluster, systemIdentifier, createdAt: new Date().toISOString() };
    const { Readable } = await import('node:stream');
    await withRetry(`writing ${key}`, retry, async () => {
      try {
        await storage.put(key, Readable.from([Buffer.from(`${JSON.stringify(identity, null, 2)}\n`)]), {
          ifAbsent: true,
        });
      } catch (error) {
        if (!(error instanceof ObjectExistsError)) throw error;
      }
    });
    stored = await withRetry(`reading ${key}`, retry, read);
  }
  if (stored !== systemIdentifier) {
    throw new ForeignWalError(
      `WAL of system identifier ${systemIdentifier} cannot go to cluster "${cluster}" in ${storage.displayUrl}: ` +
        `that cluster name belongs to system identifier ${stored}. Use another cluster name for this PostgreSQL ` +
        'cluster (config "cluster" or PGKEEP_CLUSTER)',
    );
  }
  if (cacheFile) {
    // Only a cache: a spool this user cannot write costs one GET per push, not a failed push.
    const { mkdir, writeFile, rename } = await import('node:fs/promises');
    const tmp = `${cacheFile}.${process.pid}.tmp`;
    await mkdir(cacheDir, { recursive: true, mode: 0o700 })
      .then(() => writeFile(tmp, systemIdentifier))
      .then(() => rename(tmp, cacheFile))
      .catch(() => undefined);
  }
}

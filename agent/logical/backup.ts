/**
 * A logical backup run: `pg_dump -Fc` of each database (several at once, bounded) and one
 * `pg_dumpall --globals-only`, each streamed through the data path into the repository, then the
 * manifest, written last.
 */
import { globalsKey, logicalDumpKey, newBackupId } from '../../core/keys.ts';
import { MANIFEST_FORMAT, type Manifest, type ManifestObject } from '../../core/manifest.ts';
import { runPool } from '../../core/run-pool.ts';
import type { Storage } from '../../storage/storage.ts';
import { type StoredObject, storeProduced } from '../object-store.ts';
import { listDatabases, type PgEnv, serverFacts, spawnProducer, spawnProducerInto } from '../postgres.ts';
import { recipientFingerprint } from '../recipients.ts';
import { backupStartTime, writeManifest } from '../repository.ts';
import { AGENT_VERSION } from '../version.ts';

export type BackupEvent =
  | { readonly type: 'object-started'; readonly what: string }
  | { readonly type: 'progress'; readonly what: string; readonly storedBytes: number }
  | { readonly type: 'object-stored'; readonly what: string; readonly object: StoredObject };

export interface LogicalBackupOptions {
  readonly storage: Storage;
  readonly pg: PgEnv;
  readonly cluster: string;
  readonly recipients: readonly string[];
  /** Database names, or `all` for every database that allows connections. */
  readonly databases: readonly string[] | 'all';
  readonly zstdLevel?: number;
  /** Databases dumped at once. @default 1 */
  readonly parallelism?: number;
  readonly now?: () => Date;
  readonly onEvent?: (event: BackupEvent) => void;
}

export async function runLogicalBackup(options: LogicalBackupOptions): Promise<Manifest> {
  const now = options.now ?? (() => new Date());
  const startTime = await backupStartTime(options.storage, options.now);
  const backupId = newBackupId(startTime);
  const facts = await serverFacts(options.pg);
  const databases = options.databases === 'all' ? await listDatabases(options.pg) : [...options.databases];
  if (databases.length === 0) throw new Error('no database to back up: name one with --db, or use --all');

  const objects: ManifestObject[] = [];
  const store = async (
    what: string,
    key: string,
    program: string,
    args: string[],
    env: Record<string, string>,
    signal?: AbortSignal,
  ) => {
    signal?.throwIfAborted();
    options.onEvent?.({ type: 'object-started', what });
    // On `signal` (another dump failed) this one stops too: pg_dump is killed and the storage
    // driver removes what it had begun, so the run fails fast and leaves nothing.
    const stored = await storeProduced({
      storage: options.storage,
      key,
      produce: {
        into: (stdout) => {
          const { child, done } = spawnProducerInto(options.pg, program, args, env, stdout);
          const stop = () => {
            if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
          };
          return { done, stop };
        },
        pipe: () => spawnProducer(options.pg, program, args, env).output,
      },
      recipients: options.recipients,
      zstdLevel: options.zstdLevel,
      onStoredBytes: (storedBytes) => options.onEvent?.({ type: 'progress', what, storedBytes }),
      ...(signal ? { signal } : {}),
    });
    options.onEvent?.({ type: 'object-stored', what, object: stored });
    return stored;
  };

  // Filled by position, so the manifest lists the dumps in the order the databases were named,
  // whichever finishes first.
  const dumps: ManifestObject[] = new Array(databases.length);
  await runPool(
    databases.map((database, index) => ({ database, index })),
    options.parallelism ?? 1,
    undefined,
    async ({ database, index }, signal) => {
      // The database name travels in PGDATABASE: in argv, a name containing "=" would be read as a
      // connection string. -Z0: zstd after pg_dump compresses better and faster than pg_dump's gzip.
      const stored = await store(
        database,
        logicalDumpKey(options.cluster, database, backupId),
        'pg_dump',
        ['--format=custom', '--compress=0', '--no-password'],
        { PGDATABASE: database },
        signal,
      );
      dumps[index] = { ...stored, role: 'dump', database, codec: 'zstd', encryption: 'age-v1' };
    },
  );
  objects.push(...dumps);
  const globals = await store(
    'globals',
    globalsKey(options.cluster, backupId),
    'pg_dumpall',
    ['--globals-only', '--no-password'],
    {},
  );
  objects.push({ ...globals, role: 'globals', codec: 'zstd', encryption: 'age-v1' });

  const manifest: Manifest = {
    format: MANIFEST_FORMAT,
    backupId,
    cluster: options.cluster,
    kind: 'logical',
    pgVersionNum: facts.versionNum,
    systemIdentifier: facts.systemIdentifier,
    startTime: startTime.toISOString(),
    stopTime: now().toISOString(),
    objects,
    recipientFingerprints: options.recipients.map(recipientFingerprint),
    agentVersion: AGENT_VERSION,
  };
  await writeManifest(options.storage, manifest);
  return manifest;
}

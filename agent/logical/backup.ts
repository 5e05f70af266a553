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
  // Everything below runs at once and fails as a whole: the first failure stops the rest, and each
  // store removes what it had begun. The host cannot delete, so an object may be completed only
  // once nothing before the manifest can fail any more: the dumps once the server facts are known,
  // the globals once the dumps are stored.
  const run = new AbortController();
  let firstFailure: { readonly error: unknown } | undefined;
  const failRun = (error: unknown) => {
    firstFailure ??= { error };
    run.abort(error);
    throw error;
  };
  // Beside the dumps rather than before them: pg_dump starts one psql round trip sooner.
  const facts = serverFacts(options.pg).catch(failRun);
  facts.catch(() => {});
  const databases = options.databases === 'all' ? await listDatabases(options.pg) : [...options.databases];
  if (databases.length === 0) throw new Error('no database to back up: name one with --db, or use --all');

  const store = async (
    what: string,
    key: string,
    program: string,
    args: string[],
    env: Record<string, string>,
    signal: AbortSignal,
    completeAfter: Promise<unknown>,
  ) => {
    signal.throwIfAborted();
    options.onEvent?.({ type: 'object-started', what });
    // On `signal` (another part failed) this one stops too: its producer is killed and the storage
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
      signal,
      completeAfter,
    });
    options.onEvent?.({ type: 'object-stored', what, object: stored });
    return stored;
  };

  // Filled by position, so the manifest lists the dumps in the order the databases were named,
  // whichever finishes first.
  const dumps: ManifestObject[] = new Array(databases.length);
  const dumped = runPool(
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
        facts,
      );
      dumps[index] = { ...stored, role: 'dump', database, codec: 'zstd', encryption: 'age-v1' };
    },
    run.signal,
  ).catch(failRun);
  // Dumped beside the databases (it is small and takes a connection only briefly), stored last.
  const globals = store(
    'globals',
    globalsKey(options.cluster, backupId),
    'pg_dumpall',
    ['--globals-only', '--no-password'],
    {},
    run.signal,
    dumped,
  ).catch(failRun);
  const settled = await Promise.allSettled([facts, dumped, globals]);
  if (firstFailure) throw firstFailure.error;
  const [factsResult, , globalsResult] = settled;
  if (factsResult.status !== 'fulfilled' || globalsResult.status !== 'fulfilled') {
    throw new Error('logical backup: a part failed without a recorded cause');
  }
  const objects: ManifestObject[] = [
    ...dumps,
    { ...globalsResult.value, role: 'globals', codec: 'zstd', encryption: 'age-v1' },
  ];

  const manifest: Manifest = {
    format: MANIFEST_FORMAT,
    backupId,
    cluster: options.cluster,
    kind: 'logical',
    pgVersionNum: factsResult.value.versionNum,
    systemIdentifier: factsResult.value.systemIdentifier,
    startTime: startTime.toISOString(),
    stopTime: now().toISOString(),
    objects,
    recipientFingerprints: options.recipients.map(recipientFingerprint),
    agentVersion: AGENT_VERSION,
  };
  await writeManifest(options.storage, manifest);
  return manifest;
}

/**
 * A logical backup run: `pg_dump -Fc` of each database and one `pg_dumpall --globals-only`, each
 * streamed through the data path into the repository, then the manifest, written last.
 */
import { globalsKey, logicalDumpKey, newBackupId } from '../../core/keys.ts';
import { MANIFEST_FORMAT, type Manifest, type ManifestObject } from '../../core/manifest.ts';
import type { Storage } from '../../storage/storage.ts';
import { type StoredObject, storeObject } from '../object-store.ts';
import { listDatabases, type PgEnv, serverFacts, spawnProducer } from '../postgres.ts';
import { recipientFingerprint } from '../recipients.ts';
import { backupStartTime, writeManifest } from '../repository.ts';
import { AGENT_VERSION } from '../version.ts';

export type BackupEvent =
  | { readonly type: 'object-started'; readonly what: string }
  | { readonly type: 'progress'; readonly what: string; readonly plaintextBytes: number }
  | { readonly type: 'object-stored'; readonly what: string; readonly object: StoredObject };

export interface LogicalBackupOptions {
  readonly storage: Storage;
  readonly pg: PgEnv;
  readonly cluster: string;
  readonly recipients: readonly string[];
  /** Database names, or `all` for every database that allows connections. */
  readonly databases: readonly string[] | 'all';
  readonly zstdLevel?: number;
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
  ) => {
    options.onEvent?.({ type: 'object-started', what });
    const { output } = spawnProducer(options.pg, program, args, env);
    const stored = await storeObject({
      storage: options.storage,
      key,
      source: output,
      recipients: options.recipients,
      zstdLevel: options.zstdLevel,
      onProgress: (plaintextBytes) => options.onEvent?.({ type: 'progress', what, plaintextBytes }),
    });
    options.onEvent?.({ type: 'object-stored', what, object: stored });
    return stored;
  };

  for (const database of databases) {
    // The database name travels in PGDATABASE: in argv, a name containing "=" would be read as a
    // connection string. -Z0: zstd after pg_dump compresses better and faster than pg_dump's gzip.
    const stored = await store(
      database,
      logicalDumpKey(options.cluster, database, backupId),
      'pg_dump',
      ['--format=custom', '--compress=0', '--no-password'],
      { PGDATABASE: database },
    );
    objects.push({ ...stored, role: 'dump', database, codec: 'zstd', encryption: 'age-v1' });
  }
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

/**
 * Logical restore: the dump of one database from a backup, streamed into `pg_restore` inside a
 * single transaction in a database created for it. If anything fails — a damaged object, a wrong
 * identity, pg_restore itself — the new database is dropped again: a restore is complete or absent.
 */
import { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { Manifest, ManifestObject } from '../../core/manifest.ts';
import type { Storage } from '../../storage/storage.ts';
import { ObjectIntegrityError, restoreObject } from '../object-store.ts';
import { type PgEnv, queryRows, quoteIdent, quoteLiteral, spawnConsumer } from '../postgres.ts';
import { listManifests, readManifest } from '../repository.ts';

export class RestoreError extends Error {
  override name = 'RestoreError';
}

export interface LogicalRestoreOptions {
  readonly storage: Storage;
  readonly pg: PgEnv;
  readonly cluster: string;
  readonly identities: readonly string[];
  readonly database: string;
  readonly into: string;
  /** Default: the newest backup holding `database`. */
  readonly backupId?: string | undefined;
  /**
   * Restore objects without their owners, privileges and tablespaces (`pg_restore --no-owner
   * --no-privileges --no-tablespaces`): for a scratch cluster that has none of the source's roles
   * or tablespaces, restoring as a role that owns the new database.
   */
  readonly portable?: boolean;
}

export interface LogicalRestoreResult {
  readonly backupId: string;
  readonly object: ManifestObject;
}

/** Finds the backup and the dump object of `database` in it. */
export async function findDump(
  storage: Storage,
  cluster: string,
  database: string,
  backupId?: string,
): Promise<{ manifest: Manifest; object: ManifestObject }> {
  const candidates = backupId
    ? [await readManifest(storage, cluster, backupId)]
    : (await listManifests(storage, cluster)).filter((m) => m.kind === 'logical').reverse();
  for (const manifest of candidates) {
    const object = manifest.objects.find((o) => o.role === 'dump' && o.database === database);
    if (object) return { manifest, object };
  }
  throw new RestoreError(
    backupId
      ? `backup ${backupId} holds no dump of database "${database}": run pgkeep list to see what it holds`
      : `no logical backup of database "${database}" in cluster "${cluster}": run pgkeep list to see what there is`,
  );
}

export async function runLogicalRestore(options: LogicalRestoreOptions): Promise<LogicalRestoreResult> {
  const { manifest, object } = await findDump(
    options.storage,
    options.cluster,
    options.database,
    options.backupId,
  );
  const existing = await queryRows(
    options.pg,
    `select 1 from pg_database where datname = ${quoteLiteral(options.into)}`,
  );
  if (existing.length > 0) {
    throw new RestoreError(
      `database "${options.into}" already exists: restore into a new name with --into, or drop it first`,
    );
  }
  await queryRows(options.pg, `create database ${quoteIdent(options.into)} template template0`);
  try {
    const restore = spawnConsumer(options.pg, 'pg_restore', [
      '--single-transaction',
      '--exit-on-error',
      '--no-password',
      ...(options.portable ? ['--no-owner', '--no-privileges', '--no-tablespaces'] : []),
      `--dbname=dbname=${libpqQuote(options.into)}`,
    ]);
    const stdin = restore.child.stdin;
    if (!stdin) throw new RestoreError('pg_restore has no stdin');
    const streamed = restoreObject(
      { storage: options.storage, key: object.key, identities: options.identities, expected: object },
      untilConsumerCloses(stdin),
    );
    const [stream, pgRestore] = await Promise.allSettled([
      streamed.catch((error: unknown) => {
        restore.child.kill('SIGKILL');
        throw error;
      }),
      restore.done,
    ]);
    // A damaged object is the real story even when pg_restore, cut off, failed first; otherwise
    // pg_restore's own message says more than the broken pipe it left behind.
    if (stream.status === 'rejected' && stream.reason instanceof ObjectIntegrityError) throw stream.reason;
    if (pgRestore.status === 'rejected') throw pgRestore.reason;
    if (stream.status === 'rejected') throw stream.reason;
  } catch (error) {
    await queryRows(options.pg, `drop database if exists ${quoteIdent(options.into)} with (force)`).catch(
      () => {},
    );
    throw error;
  }
  return { backupId: manifest.backupId, object };
}

/**
 * Writes into `stdin` until the consumer closes it, then discards the rest. pg_restore may exit,
 * done, before the last bytes of the object (the archive's tail) are written, and the object must
 * still be read to its end for its size and sha256 checks. Whether the restore worked is
 * pg_restore's exit status, which the caller checks; a consumer that stopped early on an error
 * exits non-zero.
 */
export function untilConsumerCloses(stdin: Writable): Writable {
  let open = true;
  const closed = () => {
    open = false;
  };
  stdin.once('close', closed);
  // EPIPE once pg_restore has exited: its exit status says whether that was a failure.
  stdin.on('error', closed);
  return new Writable({
    write(chunk, _encoding, callback) {
      if (!open) return callback();
      stdin.write(chunk, () => callback());
    },
    final(callback) {
      if (!open) return callback();
      stdin.end();
      finished(stdin).then(
        () => callback(),
        () => callback(),
      );
    },
  });
}

/** Quotes a value for a libpq connection string. */
function libpqQuote(value: string): string {
  return `'${value.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;
}

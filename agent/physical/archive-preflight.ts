/**
 * Whether this PostgreSQL server archives its WAL into this repository under this cluster name,
 * decided before a base backup uploads anything. A base backup is only usable with the archived
 * WAL from its start to its end; the agent may create objects but never delete them, so a backup
 * whose WAL goes elsewhere must be refused before its first byte is stored, not after a timeout
 * with an orphan archive left behind.
 *
 * What proves it: the repository's cluster identity object (written by the first `wal-push` under
 * the name) holds this server's system identifier. A brand-new setup has none yet; then one WAL
 * switch is requested and the identity is awaited briefly.
 */

import { setTimeout as sleep } from 'node:timers/promises';
import type { Storage } from '../../storage/storage.ts';
import { type PgEnv, queryRows } from '../postgres.ts';
import { readClusterIdentity } from '../wal/push.ts';
import { archiveLineCluster } from '../wal/spool.ts';

/** This server does not archive here; the message names what differs and the fix. */
export class ArchiveMismatchError extends Error {
  override name = 'ArchiveMismatchError';
}

export interface ArchiveFacts {
  readonly archiveMode: string;
  readonly archiveCommand: string;
  readonly systemIdentifier: string;
  /** pg_stat_archiver's last archived WAL file; '' when none yet. */
  readonly lastArchivedWal: string;
  readonly failedCount: number;
  readonly lastFailedWal: string;
}

export async function archiveFacts(pg: PgEnv): Promise<ArchiveFacts> {
  const [row] = await queryRows(
    pg,
    `select current_setting('archive_mode'), (select system_identifier from pg_control_system()),
       coalesce(last_archived_wal, ''), failed_count, coalesce(last_failed_wal, '')
     from pg_stat_archiver`,
  );
  const [archiveMode = '', systemIdentifier = '', last = '', failed = '0', lastFailed = ''] = row ?? [];
  // Only superusers and pg_read_all_settings may read archive_command.
  const [command] = await queryRows(pg, "select current_setting('archive_command')").catch(() => [['']]);
  const archiveCommand = command?.[0] ?? '';
  return {
    archiveMode,
    archiveCommand,
    systemIdentifier,
    lastArchivedWal: last,
    failedCount: Number(failed),
    lastFailedWal: lastFailed,
  };
}

export interface PreflightOptions {
  readonly storage: Storage;
  readonly cluster: string;
  readonly pg: PgEnv;
  /** How long to wait for a first WAL switch to be archived on a new setup. @default 60 */
  readonly firstArchiveWaitSeconds?: number;
}

/** Resolves when WAL of this server is archived under `cluster`; throws {@link ArchiveMismatchError} otherwise. */
export async function assertArchivesHere(options: PreflightOptions): Promise<void> {
  const { storage, cluster, pg } = options;
  const facts = await archiveFacts(pg);
  const where = `cluster "${cluster}" in ${storage.displayUrl}`;
  if (facts.archiveMode === 'off') {
    throw new ArchiveMismatchError(
      `archive_mode is off on this server, so no WAL reaches ${where} and no base backup could be restored: ` +
        'set archive_mode = on and archive_command to the line `pgkeep systemd-unit --archive-command` prints, then restart PostgreSQL',
    );
  }
  let stored = await readClusterIdentity(storage, cluster);
  if (stored === undefined && facts.lastArchivedWal === '') {
    // A new setup: nothing archived yet. One switch makes the archiver push, which binds the name.
    await queryRows(pg, 'select pg_switch_wal()').catch(() => undefined);
    const deadline = Date.now() + (options.firstArchiveWaitSeconds ?? 60) * 1000;
    while (stored === undefined && Date.now() < deadline) {
      await sleep(250);
      stored = await readClusterIdentity(storage, cluster);
    }
  }
  if (stored === facts.systemIdentifier) return;
  if (stored !== undefined) {
    throw new ArchiveMismatchError(
      `${where} belongs to another PostgreSQL cluster (system identifier ${stored}); this server is ` +
        `${facts.systemIdentifier}. Use the cluster name this server's archive_command archives under ` +
        '(config "cluster" or PGKEEP_CLUSTER); nothing was uploaded',
    );
  }
  const archiver =
    facts.lastArchivedWal === ''
      ? `it has archived nothing yet${facts.failedCount > 0 ? ` and ${facts.failedCount} attempt(s) failed (last ${facts.lastFailedWal}: see the server log)` : ''}`
      : `it archives (last ${facts.lastArchivedWal}), but not under this name`;
  throw new ArchiveMismatchError(
    `no WAL of this server (system identifier ${facts.systemIdentifier}) is archived under ${where}: ${archiver}. ` +
      `${archivingCluster(facts.archiveCommand) ? `Its archive_command archives under cluster "${archivingCluster(facts.archiveCommand)}". ` : ''}` +
      'Give basebackup the cluster name and repository of the archive_command line (config "cluster" or ' +
      'PGKEEP_CLUSTER), or fix archiving (pgkeep check --archive); nothing was uploaded',
  );
}

/**
 * The cluster name in an archive_command line pgkeep printed, or undefined. The line itself is
 * never echoed: an operator's own command may hold a secret.
 */
export const archivingCluster = archiveLineCluster;

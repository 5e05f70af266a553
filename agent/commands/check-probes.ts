/**
 * The checks of `pgkeep check` that go beyond "it answers": does this server archive into this
 * repository, can the archiving user write the spool, does REPLICATION work, does the identity
 * open what the recipients encrypt. Each resolves to a line for people or throws saying what is
 * wrong and the fix.
 */
import { execFile } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { decryptStream, encryptBuffer } from '../../core/age-stream.ts';
import { gapsInWindows } from '../../core/wal-gaps.ts';
import type { Storage } from '../../storage/storage.ts';
import { archiveFacts, archivingCluster } from '../physical/archive-preflight.ts';
import { scanWalArchive } from '../physical/wal-archive.ts';
import { type PgEnv, pgProgram, queryRows } from '../postgres.ts';
import { listManifests } from '../repository.ts';
import { readClusterIdentity, storedWalVersions } from '../wal/push.ts';
import { WalSpool } from '../wal/spool.ts';

/**
 * archive_mode is on and archive_command is pgkeep's line for this cluster; the name is bound to
 * this server. With archive_mode off and physical backups not `required` (logical backups only),
 * that is reported, not failed.
 */
export async function checkArchiving(
  pg: PgEnv,
  storage: Storage,
  cluster: string,
  required: boolean,
): Promise<{ detail: string; archiving: boolean }> {
  const facts = await archiveFacts(pg);
  if (facts.archiveMode === 'off' && !required) {
    return {
      detail:
        'archive_mode is off: logical backups only, no point-in-time recovery (set archive_mode = on and the archive_command line of pgkeep systemd-unit --archive-command for it)',
      archiving: false,
    };
  }
  if (facts.archiveMode === 'off') {
    throw new Error(
      'archive_mode is off: set archive_mode = on and archive_command to the line `pgkeep systemd-unit --archive-command` prints, then restart PostgreSQL',
    );
  }
  const parts = [`archive_mode ${facts.archiveMode}`];
  if (facts.archiveCommand === '') {
    parts.push('archive_command not visible to this role (needs superuser or pg_read_all_settings)');
  } else if (!facts.archiveCommand.includes('wal-push')) {
    throw new Error(
      'archive_command does not run pgkeep wal-push: set it to the line `pgkeep systemd-unit --archive-command` prints and reload PostgreSQL',
    );
  } else {
    const named = archivingCluster(facts.archiveCommand);
    if (named && named !== cluster) {
      throw new Error(
        `archive_command archives under cluster "${named}" but this configuration names "${cluster}": use one name in both (regenerate the line with pgkeep systemd-unit --archive-command)`,
      );
    }
    parts.push('archive_command runs pgkeep wal-push');
  }
  const stored = await readClusterIdentity(storage, cluster);
  if (stored !== undefined && stored !== facts.systemIdentifier) {
    throw new Error(
      `cluster "${cluster}" in ${storage.displayUrl} belongs to system identifier ${stored}, this server is ${facts.systemIdentifier}: use another cluster name`,
    );
  }
  parts.push(
    stored === undefined ? 'nothing archived under this name yet' : 'repository bound to this server',
  );
  if (facts.failedCount > 0)
    parts.push(`${facts.failedCount} failed attempt(s), last ${facts.lastFailedWal}`);
  return { detail: parts.join('; '), archiving: true };
}

/** Switches WAL and waits until the finished segment is in the repository. */
export async function checkArchivePush(
  pg: PgEnv,
  storage: Storage,
  cluster: string,
  timeoutSeconds: number,
): Promise<string> {
  // A record in the current segment, so that the switch finishes a segment (a switch of an empty one does nothing).
  await queryRows(pg, "select pg_logical_emit_message(false, 'pgkeep-check', 'archive')").catch(
    () => undefined,
  );
  const [row] = await queryRows(pg, 'select pg_walfile_name(pg_switch_wal())');
  const name = row?.[0];
  if (!name) throw new Error('pg_switch_wal() returned no WAL file name');
  const started = Date.now();
  while ((await storedWalVersions(storage, cluster, name)).length === 0) {
    if (Date.now() - started > timeoutSeconds * 1000) {
      throw new Error(
        `switched WAL, but segment ${name} did not reach ${storage.displayUrl} within ${timeoutSeconds} s: ` +
          'see pg_stat_archiver and the server log for archive_command errors',
      );
    }
    await sleep(200);
  }
  return `segment ${name} archived in ${((Date.now() - started) / 1000).toFixed(1)} s`;
}

/**
 * Whether the user that runs archive_command (the owner of the data directory) can create and
 * write the spool. Decided from modes and owners, without writing anything.
 */
export async function checkSpool(pg: PgEnv, spoolDir: string, cluster: string): Promise<string> {
  const [row] = await queryRows(pg, "select current_setting('data_directory')").catch(() => [[]]);
  const dataDir = row?.[0];
  // The spool is keyed by data directory; without the server's, the current one stands in.
  const spool = new WalSpool(spoolDir, cluster, dataDir ?? process.cwd());
  const owner = dataDir ? await stat(dataDir).catch(() => undefined) : undefined;
  const uid = owner?.uid ?? process.getuid?.() ?? 0;
  const gid = owner?.gid ?? process.getgid?.() ?? 0;
  const who = owner
    ? `uid ${uid} (owner of the data directory)`
    : `uid ${uid} (this user; the data directory is not visible)`;
  let dir = spool.root;
  let info = await stat(dir).catch(() => undefined);
  while (!info && dir !== '/') {
    dir = dirname(dir);
    info = await stat(dir).catch(() => undefined);
  }
  const writable =
    uid === 0 ||
    (info !== undefined &&
      (info.uid === uid
        ? (info.mode & 0o300) === 0o300
        : info.gid === gid
          ? (info.mode & 0o030) === 0o030
          : (info.mode & 0o003) === 0o003));
  if (!writable) {
    throw new Error(
      `${dir} is not writable by ${who}, so archive_command cannot keep its spool ${spool.root}: ` +
        `as root, install -d -o ${uid} -g ${gid} -m 0700 ${dirname(spool.root)}`,
    );
  }
  return `${spool.root} ${dir === spool.root ? 'is' : 'can be created'} writable by ${who}`;
}

/** A replication connection, as pg_basebackup makes it: pg_hba.conf and the role's REPLICATION attribute. */
export async function checkReplication(pg: PgEnv): Promise<string> {
  const database = pg.env.PGDATABASE ?? 'postgres';
  const out = await new Promise<string>((resolve, reject) => {
    execFile(
      pgProgram(pg, 'psql'),
      ['-X', '-A', '-t', '-d', `dbname=${database} replication=database`, '-c', 'IDENTIFY_SYSTEM'],
      { env: pg.env },
      (error, stdout, stderr) =>
        error
          ? reject(
              new Error(
                `a replication connection (what pg_basebackup needs) failed: ${stderr.trim() || error.message}; ` +
                  'give the role REPLICATION (ALTER ROLE … REPLICATION) and allow it in pg_hba.conf (a "replication" line)',
              ),
            )
          : resolve(stdout),
    );
  });
  return `replication connection works (timeline ${out.trim().split('|')[1] ?? '?'})`;
}

/** What the recipients encrypt, the identity decrypts: the pair belongs together. */
export async function checkIdentityMatches(
  recipients: readonly string[],
  identities: readonly string[],
): Promise<string> {
  const probe = Buffer.from('pgkeep check');
  try {
    const plain = await pipeline(
      Readable.from([encryptBuffer(recipients, probe)]),
      decryptStream(identities),
      buffer,
    );
    if (!plain.equals(probe)) throw new Error('decrypted text differs');
  } catch (error) {
    throw new Error(
      `the identity file matches none of the ${recipients.length} configured recipient(s) (${(error as Error).message}): ` +
        'restores would fail; configure the identity whose recipient (pgkeep keygen printed it) is in recipients',
    );
  }
  return `the identity decrypts what the ${recipients.length} recipient(s) encrypt`;
}

/**
 * One line per timeline: every gap in the archived WAL between the oldest base backup on it and
 * its newest segment (agent/physical/wal-archive.ts decides the window), naming the missing
 * segments. A gap means recovery from an older backup stops there.
 */
export async function checkArchiveGaps(
  storage: Storage,
  cluster: string,
): Promise<{ name: string; ok: boolean; detail: string }[]> {
  const [archive, manifests] = await Promise.all([
    scanWalArchive(storage, cluster),
    listManifests(storage, cluster),
  ]);
  const windows = gapsInWindows(archive.timelines, manifests);
  if (windows.length === 0) return [{ name: 'archive gaps', ok: true, detail: 'no archived WAL yet' }];
  return windows.map((w) => {
    const window = `${w.from} to ${w.to}${w.baseBackupId ? ` (from base backup ${w.baseBackupId})` : ''}`;
    const missing = w.gaps.map((g) =>
      g.from === g.to ? `${g.from} missing` : `${g.from} to ${g.to} missing (${g.missingSegments} segments)`,
    );
    return {
      name: `archive gaps, timeline ${w.timeline}`,
      ok: w.gaps.length === 0,
      detail:
        w.gaps.length === 0
          ? `no gap in ${window}`
          : `${w.gaps.length} gap(s) in ${window}: ${missing.join('; ')}; recovery across a gap stops at it: take a new base backup (pgkeep basebackup) to start a window without it`,
    };
  });
}

/**
 * Physical restore: lays a base backup down in a data directory and configures recovery, so that
 * starting PostgreSQL on it replays archived WAL (through `pgkeep wal-fetch`) up to a target — or,
 * with no target, to the end of the archive, losing nothing that was archived.
 *
 * The data directory must be absent or empty unless `overwrite` says to empty it: restoring over
 * a live cluster by accident destroys it.
 */
import { spawn } from 'node:child_process';
import { appendFile, chmod, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { walPrefix } from '../../core/keys.ts';
import type { Manifest, ManifestObject } from '../../core/manifest.ts';
import { primaryTimeline } from '../../core/primary-timeline.ts';
import { compareWalPositions, parseLsn, parseWalFileName, walFileNameForLsn } from '../../core/wal-names.ts';
import type { Storage } from '../../storage/storage.ts';
import { asIntegrityError, ObjectIntegrityError, readStages } from '../object-store.ts';
import { listManifests } from '../repository.ts';
import { listRecordedGaps } from '../wal/backlog.ts';
import { postgresqlConfString } from '../wal/spool.ts';
import { type ArchiveChoice, writeRestoredMarker } from './restored-marker.ts';

export type RecoveryTarget =
  | { readonly kind: 'time'; readonly value: string }
  | { readonly kind: 'lsn'; readonly value: string }
  | { readonly kind: 'xid'; readonly value: string }
  | { readonly kind: 'name'; readonly value: string }
  /** The end of the base backup: the earliest consistent state (no WAL beyond what it needs). */
  | { readonly kind: 'immediate' };

export interface PhysicalRestoreOptions {
  readonly storage: Storage;
  readonly cluster: string;
  readonly identities: readonly string[];
  readonly pgData: string;
  /** A backup id; default: the newest base backup that can reach the target. */
  readonly backupId?: string;
  readonly target?: RecoveryTarget;
  /** What the server does at the target. @default 'promote' with a target; PostgreSQL's default otherwise */
  readonly targetAction?: 'promote' | 'pause' | 'shutdown';
  /** The restore_command to configure (see wal/spool.ts restoreCommandLine). */
  readonly restoreCommand: string;
  /** Empty a non-empty data directory first. */
  readonly overwrite?: boolean;
  /** New locations for tablespaces, by OID; default: where they were. */
  readonly tablespaceMap?: Readonly<Record<number, string>>;
  /** Owner of every file laid down (the server's user when restoring as root). */
  readonly owner?: { readonly uid: number; readonly gid: number };
  /** Where the restored cluster may archive (restored-marker.ts). @default - off */
  readonly archive?: ArchiveChoice;
  /** The archive_command for `archive.mode: 'new-cluster'` (wal/spool.ts archiveCommandLine). */
  readonly archiveCommand?: string;
  /**
   * Replace the backup's own configuration instead of appending to it: postgresql.conf becomes
   * `postgresqlConf`, pg_hba.conf `hbaConf`, and postgresql.auto.conf holds only the recovery
   * settings. A verifier uses this so that settings a host wrote (shared_preload_libraries,
   * archive_command, listen addresses) never take effect where the backup is checked.
   */
  readonly replaceConfiguration?: { readonly postgresqlConf: string; readonly hbaConf: string };
  /** recovery_target_timeline. @default 'latest' */
  readonly targetTimeline?: string;
}

export interface PhysicalRestoreResult {
  readonly manifest: Manifest;
  /** OID -> directory of each tablespace laid down. */
  readonly tablespaces: Record<number, string>;
  /** The timeline recovery follows (core/primary-timeline.ts); undefined: 'latest', no WAL stored. */
  readonly timeline: number | undefined;
}

/** The primary's timeline in the repository (core/primary-timeline.ts), by one listing of its WAL. */
export async function repositoryPrimaryTimeline(
  storage: Storage,
  cluster: string,
): Promise<number | undefined> {
  const objects = [];
  for await (const info of storage.list(walPrefix(cluster))) objects.push(info);
  return primaryTimeline(objects);
}

/** Every base-backup manifest of the cluster, oldest first. */
export async function listBaseBackups(storage: Storage, cluster: string): Promise<Manifest[]> {
  return (await listManifests(storage, cluster)).filter((m) => m.kind === 'base');
}

/** The newest backup that ended before the target (any for xid and name targets, which have no order). */
export function chooseBaseBackup(
  manifests: readonly Manifest[],
  target?: RecoveryTarget,
): Manifest | undefined {
  const candidates = manifests.filter((m) => {
    if (target?.kind === 'time') return Date.parse(m.stopTime) <= Date.parse(target.value);
    if (target?.kind === 'lsn' && m.stopLsn) return parseLsn(m.stopLsn) <= parseLsn(target.value);
    return true;
  });
  return candidates[candidates.length - 1];
}

/**
 * Refuses a recovery that would replay across WAL the host dropped at its backlog limit
 * (agent/wal/backlog.ts): PostgreSQL would end recovery at the gap and promote, short of the
 * target, without an error. Only an LSN target before the gap can be placed on its near side.
 */
export function refuseAcrossGap(
  manifest: Manifest,
  gaps: readonly { first: string; last: string; key: string }[],
  target: RecoveryTarget | undefined,
): void {
  const start = manifest.startWalFile;
  if (start === undefined) return;
  for (const gap of gaps) {
    if ((parseWalFileName(gap.first)?.timeline ?? 0) < (manifest.timeline ?? 1)) continue;
    if (compareWalPositions(gap.last, start) < 0) continue;
    if (target?.kind === 'lsn' && compareWalPositions(walFileNameForLsn(1, target.value), gap.first) < 0)
      continue;
    throw new Error(
      `recovery from base backup ${manifest.backupId} would cross the recorded WAL gap ${gap.first} to ${gap.last} ` +
        `(${gap.key}: dropped at the host's backlog limit, wal.onBacklogFull: drop), and PostgreSQL would stop ` +
        'there short of the target: restore from a base backup taken after the gap, or give --target-lsn before ' +
        `the start of ${gap.first}`,
    );
  }
}

async function assertEmptyOrAbsent(dir: string, overwrite: boolean): Promise<void> {
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  if (entries.length === 0) return;
  if (!overwrite) {
    throw new Error(
      `data directory ${dir} is not empty (${entries.length} entries, e.g. ${entries.slice(0, 3).join(', ')}): ` +
        'restore into an empty or new directory, or pass --overwrite to delete its contents first',
    );
  }
  if (entries.includes('postmaster.pid')) {
    throw new Error(
      `data directory ${dir} has a postmaster.pid: stop the server running on it before restoring`,
    );
  }
  for (const entry of entries) await rm(join(dir, entry), { recursive: true, force: true });
}

/** Streams the decrypted tar of `object` into `tar -x -C dir`. */
async function extract(storage: Storage, object: ManifestObject, identities: readonly string[], dir: string) {
  const source: Readable = await storage.get(object.key);
  const tar = spawn('tar', ['-x', '-f', '-', '-C', dir], { stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  tar.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<void>((resolve, reject) => {
    tar.once('error', reject);
    tar.once('close', (code) =>
      code === 0 ? resolve() : reject(new Error(`tar failed extracting ${object.key}: ${stderr.trim()}`)),
    );
  });
  const [stream, untar] = await Promise.allSettled([
    pipeline([
      source,
      ...readStages({
        key: object.key,
        identities,
        expected: {
          sizeBytes: object.sizeBytes,
          sha256: object.sha256,
          plaintextSizeBytes: object.plaintextSizeBytes,
          plaintextSha256: object.plaintextSha256,
        },
      }),
      tar.stdin,
    ]).catch((error: unknown) => {
      tar.kill('SIGKILL');
      throw asIntegrityError(object.key, error);
    }),
    exited,
  ]);
  // A damaged archive is the story even when tar, cut off, failed first.
  if (stream.status === 'rejected' && stream.reason instanceof ObjectIntegrityError) throw stream.reason;
  if (untar.status === 'rejected') throw untar.reason;
  if (stream.status === 'rejected') throw stream.reason;
}

function recoverySettings(options: PhysicalRestoreOptions, timeline: number | undefined): string {
  const lines = [
    '',
    `# Added by pgkeep restore at ${new Date().toISOString()}`,
    `restore_command = ${postgresqlConfString(options.restoreCommand)}`,
    // The primary's timeline, not PostgreSQL's 'latest' (the highest one archived): a restored
    // copy that archived here must not decide what a restore replays.
    `recovery_target_timeline = ${postgresqlConfString(options.targetTimeline ?? (timeline === undefined ? 'latest' : String(timeline)))}`,
  ];
  const archive = options.archive ?? { mode: 'off' };
  if (archive.mode === 'off') {
    lines.push("archive_mode = 'off' # a restored copy does not archive: pgkeep restore --archive");
  } else if (archive.mode === 'new-cluster') {
    if (!options.archiveCommand)
      throw new Error('archive mode new-cluster needs the archive_command to write');
    lines.push("archive_mode = 'on'", `archive_command = ${postgresqlConfString(options.archiveCommand)}`);
  }
  const target = options.target;
  if (target) {
    lines.push(
      target.kind === 'immediate'
        ? "recovery_target = 'immediate'"
        : `recovery_target_${target.kind} = ${postgresqlConfString(target.value)}`,
    );
    lines.push(`recovery_target_action = ${postgresqlConfString(options.targetAction ?? 'promote')}`);
  }
  return `${lines.join('\n')}\n`;
}

/** Lays the backup down and configures recovery; start PostgreSQL on `pgData` afterwards. */
export async function restorePhysical(options: PhysicalRestoreOptions): Promise<PhysicalRestoreResult> {
  const manifests = await listBaseBackups(options.storage, options.cluster);
  const timeline = await repositoryPrimaryTimeline(options.storage, options.cluster);
  const manifest = options.backupId
    ? manifests.find((m) => m.backupId === options.backupId)
    : chooseBaseBackup(
        // A backup on a later timeline than the primary's cannot lead to it.
        manifests.filter((m) => timeline === undefined || (m.timeline ?? 1) <= timeline),
        options.target,
      );
  if (!manifest) {
    const known = manifests.map((m) => m.backupId).join(', ') || 'none';
    throw new Error(
      options.backupId
        ? `no base backup ${options.backupId} in cluster "${options.cluster}"; base backups: ${known}`
        : `no base backup of cluster "${options.cluster}" ends before the recovery target; base backups: ${known}`,
    );
  }
  refuseAcrossGap(manifest, await listRecordedGaps(options.storage, options.cluster), options.target);
  await assertEmptyOrAbsent(options.pgData, options.overwrite ?? false);
  await mkdir(options.pgData, { recursive: true, mode: 0o700 });
  // PostgreSQL refuses to start on a data directory others may read (an existing empty one may be 0755).
  await chmod(options.pgData, 0o700);

  const base = manifest.objects.find((o) => o.role === 'base');
  if (!base) throw new Error(`base backup ${manifest.backupId} has no base archive in its manifest`);
  await extract(options.storage, base, options.identities, options.pgData);

  // In tar format the tablespaces' locations are in tablespace_map ("<oid> <path>" per line);
  // PostgreSQL makes the pg_tblspc links from it at startup.
  const tablespaces: Record<number, string> = {};
  const mapFile = join(options.pgData, 'tablespace_map');
  const map = await readFile(mapFile, 'utf8').catch(() => '');
  const lines: string[] = [];
  for (const line of map.split('\n').filter(Boolean)) {
    const m = /^(\d+) (.*)$/.exec(line);
    if (!m?.[1] || m[2] === undefined) continue;
    const oid = Number(m[1]);
    const dir = options.tablespaceMap?.[oid] ?? m[2];
    tablespaces[oid] = dir;
    lines.push(`${oid} ${dir}`);
  }
  if (lines.length > 0) await writeFile(mapFile, `${lines.join('\n')}\n`);
  for (const object of manifest.objects.filter((o) => o.role === 'tablespace')) {
    const oid = object.tablespaceOid ?? 0;
    const dir = tablespaces[oid];
    if (!dir)
      throw new Error(`tablespace ${oid} of backup ${manifest.backupId} is not in its tablespace_map`);
    await assertEmptyOrAbsent(dir, options.overwrite ?? false);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await chmod(dir, 0o700);
    await extract(options.storage, object, options.identities, dir);
  }

  const replace = options.replaceConfiguration;
  if (replace) {
    await writeFile(join(options.pgData, 'postgresql.conf'), replace.postgresqlConf);
    await writeFile(join(options.pgData, 'pg_hba.conf'), replace.hbaConf);
    await writeFile(join(options.pgData, 'postgresql.auto.conf'), recoverySettings(options, timeline));
  } else {
    await appendFile(join(options.pgData, 'postgresql.auto.conf'), recoverySettings(options, timeline));
  }
  await writeRestoredMarker(options.pgData, {
    cluster: options.cluster,
    backupId: manifest.backupId,
    restoredAt: new Date().toISOString(),
    archive: options.archive ?? { mode: 'off' },
  });
  await writeFile(join(options.pgData, 'recovery.signal'), '');
  await rm(join(options.pgData, 'standby.signal'), { force: true });
  if (options.owner) {
    for (const dir of [options.pgData, ...Object.values(tablespaces)]) await chownTree(dir, options.owner);
  }
  return { manifest, tablespaces, timeline };
}

/** Gives `dir` and everything under it to `owner`. */
export async function chownTree(dir: string, owner: { uid: number; gid: number }): Promise<void> {
  const { chown } = await import('node:fs/promises');
  await chown(dir, owner.uid, owner.gid);
  for (const entry of await readdir(dir, { recursive: true })) {
    const path = join(dir, entry);
    if ((await stat(path).catch(() => undefined)) !== undefined) await chown(path, owner.uid, owner.gid);
  }
}

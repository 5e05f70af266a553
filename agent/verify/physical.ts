/**
 * Verifying a base backup: laid down by the physical restore with a configuration pgkeep writes,
 * recovered from WAL fetched into the scratch directory, to the backup's end point (`--backup`)
 * or a point-in-time target (`--pitr`), and judged by where replay got to, not by "it started".
 */
import { join } from 'node:path';
import type { Manifest } from '../../core/manifest.ts';
import { parseLsn, segmentNumberOf } from '../../core/wal-names.ts';
import {
  chooseBaseBackup,
  chownTree,
  listBaseBackups,
  type RecoveryTarget,
  restorePhysical,
} from '../physical/restore.ts';
import { queryRows } from '../postgres.ts';
import { shellQuote } from '../wal/spool.ts';
import { newestCommit } from './checks.ts';
import {
  SCRATCH_HBA_CONF,
  type ScratchDirs,
  ScratchServer,
  scratchPgEnv,
  scratchPostgresqlConf,
} from './scratch-cluster.ts';
import type { VerifyDeps, VerifyOptions, VerifyProgress } from './types.ts';
import {
  archivedSegments,
  defaultTargetLsn,
  fetchSegments,
  newestSegment,
  segmentOfLsn,
  segmentRun,
} from './wal-window.ts';

type PhysicalSelection = { backupId: string } | { pitr: true; targetTime?: string; targetLsn?: string };

/** The base backup to restore and the target to recover to. */
async function plan(
  options: VerifyOptions,
  selection: PhysicalSelection,
): Promise<{ manifest: Manifest; target: RecoveryTarget; archived: Set<number> }> {
  const bases = await listBaseBackups(options.storage, options.cluster);
  const known = bases.map((m) => m.backupId).join(', ') || 'none';
  let manifest: Manifest | undefined;
  let target: RecoveryTarget;
  if ('backupId' in selection) {
    manifest = bases.find((m) => m.backupId === selection.backupId);
    target = { kind: 'immediate' };
  } else if (selection.targetTime) {
    // PostgreSQL's recovery_target_time refuses ISO 8601's "T…Z" form; UTC in its own form.
    const iso = new Date(selection.targetTime).toISOString();
    target = { kind: 'time', value: iso.replace('T', ' ').replace('Z', '+00') };
    manifest = chooseBaseBackup(bases, target);
  } else if (selection.targetLsn) {
    target = { kind: 'lsn', value: selection.targetLsn };
    manifest = chooseBaseBackup(bases, target);
  } else {
    const newest = bases[bases.length - 1];
    if (!newest?.timeline) {
      throw new Error(
        `no base backup of cluster "${options.cluster}" in ${options.storage.displayUrl}: take one with pgkeep basebackup`,
      );
    }
    const onTimeline = bases.filter((m) => m.timeline === newest.timeline);
    const archived = await archivedSegments(options.storage, options.cluster, newest.timeline);
    target = { kind: 'lsn', value: defaultTargetLsn(onTimeline, archived, options.runId) };
    manifest = chooseBaseBackup(onTimeline, target);
  }
  if (!manifest?.timeline || !manifest.startWalFile || !manifest.stopLsn) {
    throw new Error(
      'backupId' in selection
        ? `no base backup ${selection.backupId} in cluster "${options.cluster}" (${options.storage.displayUrl}); base backups: ${known}`
        : `no base backup of cluster "${options.cluster}" ends before the recovery target; base backups: ${known}`,
    );
  }
  return {
    manifest,
    target,
    archived: await archivedSegments(options.storage, options.cluster, manifest.timeline),
  };
}

function describeTarget(target: RecoveryTarget, manifest: Manifest): string {
  if (target.kind === 'immediate') return `the end of base backup ${manifest.backupId} (${manifest.stopLsn})`;
  return `target ${target.kind} ${target.value}`;
}

export async function verifyPhysical(
  options: VerifyOptions,
  deps: VerifyDeps,
  selection: PhysicalSelection,
  dirs: ScratchDirs,
  pgBin: string | undefined,
  progress: VerifyProgress,
  started: (server: ScratchServer) => void,
): Promise<void> {
  const { manifest, target, archived } = await plan(options, selection);
  const timeline = manifest.timeline as number;
  progress.backupId = manifest.backupId;
  progress.mode = target.kind === 'immediate' ? 'base' : 'pitr';
  if (target.kind === 'time')
    progress.measures.targetTime = new Date(target.value.replace(' ', 'T').replace('+00', 'Z')).toISOString();
  if (target.kind === 'lsn') progress.measures.targetLsn = target.value;

  const first = segmentNumberOf(manifest.startWalFile as string);
  const stopSegment = segmentOfLsn(timeline, manifest.stopLsn as string);
  const newest = newestSegment(archived) ?? stopSegment;
  // Recovery stops at the first record that starts at or after an LSN target, which may be in the
  // next segment (the rest of the target's segment can be the padding after a WAL switch).
  const targetSegment = target.kind === 'lsn' ? segmentOfLsn(timeline, target.value) : undefined;
  const lastNeeded =
    target.kind === 'immediate'
      ? stopSegment
      : targetSegment !== undefined
        ? Math.max(targetSegment, Math.min(targetSegment + 1, newest))
        : newest;
  // For PITR the whole window the archive claims to cover must be there, not only up to this run's target.
  const run = segmentRun(
    timeline,
    first,
    Math.max(lastNeeded, progress.mode === 'pitr' ? newest : lastNeeded),
    archived,
  );
  if (progress.mode === 'pitr') {
    progress.checks.push(
      run.firstMissing
        ? {
            name: 'wal-continuity',
            passed: false,
            detail: `WAL segment ${run.firstMissing} is missing from the repository: the archive holds segments up to ${run.names[run.names.length - 1]} on timeline ${timeline}, so no recovery can pass ${run.firstMissing}`,
          }
        : {
            name: 'wal-continuity',
            passed: true,
            detail: `${run.names.length} segments ${run.names[0]} to ${run.names[run.names.length - 1]} archived without a gap`,
          },
    );
  }
  const reachable = run.names.slice(0, segmentIndexOf(run.names, run.firstMissing, lastNeeded - first));
  deps.onEvent?.({ phase: 'fetch-wal', detail: `fetching ${reachable.length} WAL segments` });
  const restoreStart = performance.now();
  const fetched = await fetchSegments({
    storage: options.storage,
    cluster: options.cluster,
    identities: options.identities,
    timeline,
    names: reachable,
    dir: dirs.walDir,
    ...(deps.signal ? { signal: deps.signal } : {}),
  });
  if (dirs.user) await chownTree(dirs.walDir, dirs.user);

  deps.onEvent?.({ phase: 'restore', detail: `laying down base backup ${manifest.backupId}` });
  const tablespaceMap: Record<number, string> = {};
  for (const o of manifest.objects) {
    if (o.tablespaceOid !== undefined)
      tablespaceMap[o.tablespaceOid] = join(dirs.tablespaceDir, String(o.tablespaceOid));
  }
  const wal = shellQuote(dirs.walDir);
  await restorePhysical({
    storage: options.storage,
    cluster: options.cluster,
    identities: options.identities,
    pgData: dirs.dataDir,
    backupId: manifest.backupId,
    target,
    targetAction: 'promote',
    targetTimeline: 'current',
    restoreCommand: `test -f ${wal}/%f && cp ${wal}/%f %p`,
    replaceConfiguration: {
      postgresqlConf: scratchPostgresqlConf(dirs.port, dirs.socketDir),
      hbaConf: SCRATCH_HBA_CONF,
    },
    tablespaceMap,
    ...(dirs.user ? { owner: dirs.user } : {}),
  });

  const archives = manifest.objects.length;
  progress.checks.push({
    name: 'objects',
    passed: true,
    detail: `${archives} archive${archives === 1 ? '' : 's'} and ${fetched} WAL files: stored and plaintext size and sha256 match the manifest and keys`,
  });

  deps.onEvent?.({ phase: 'recover', detail: `recovering to ${describeTarget(target, manifest)}` });
  const pg = scratchPgEnv(dirs, pgBin);
  const server = new ScratchServer(dirs, pgBin);
  started(server);
  const opened = await server.waitOpen(pg, (deps.recoveryTimeoutSeconds ?? 21_600) * 1000, deps.signal);
  if (!opened) {
    const log = server.log;
    const fatal = log
      .split('\n')
      .filter((l) => /FATAL|PANIC|ERROR|invalid value|parameter "/.test(l))
      .slice(-3)
      .join(' | ');
    if (/recovery ended before configured recovery target was reached/.test(log)) {
      progress.checks.push({
        name: 'restore',
        passed: true,
        detail: `base backup ${manifest.backupId} laid down`,
      });
      const why = run.firstMissing
        ? `WAL segment ${run.firstMissing} is missing from the repository`
        : `the archive ends with segment ${run.names[run.names.length - 1]}`;
      progress.checks.push({
        name: 'recovery-target',
        passed: false,
        detail: `recovery ended before reaching ${describeTarget(target, manifest)}: ${why}`,
      });
    } else {
      progress.checks.push({
        name: 'restore',
        passed: false,
        detail: `the restored cluster of backup ${manifest.backupId} did not start: ${fatal || log.slice(-500)}`,
      });
    }
    return;
  }
  progress.measures.restoreSeconds = (performance.now() - restoreStart) / 1000;
  progress.checks.push({
    name: 'restore',
    passed: true,
    detail: `base backup ${manifest.backupId} laid down and recovered in ${progress.measures.restoreSeconds.toFixed(1)} s`,
  });

  // Before anything writes to the cluster: the newest commit is the one recovery replayed.
  const commit = await newestCommit(pg);
  progress.measures.newestCommitTime = commit?.time ?? manifest.stopTime;
  progress.measures.newestCommitSource = commit?.source ?? 'recovery-end';
  const reached = (await queryRows(pg, 'select pg_catalog.pg_last_wal_replay_lsn()'))[0]?.[0] ?? '';
  progress.measures.reachedLsn = reached;
  const stopped = /recovery stopping (before|after) [^\n]*/.exec(server.log)?.[0];
  const wantLsn =
    target.kind === 'lsn' ? target.value : target.kind === 'immediate' ? manifest.stopLsn : undefined;
  const lsnReached =
    wantLsn === undefined ||
    (/^[0-9A-F]+\/[0-9A-F]+$/.test(reached) && parseLsn(reached) >= parseLsn(wantLsn));
  progress.checks.push({
    name: 'recovery-target',
    passed: stopped !== undefined && lsnReached,
    detail:
      stopped !== undefined && lsnReached
        ? `reached ${describeTarget(target, manifest)}: replay at ${reached}; server: "${stopped}"`
        : `did not reach ${describeTarget(target, manifest)}: replay at ${reached || 'unknown'}${stopped ? `; server: "${stopped}"` : '; the server never reported stopping at the target'}`,
  });
}

/** How many of `names` can be replayed: up to the first missing one and at most `lastIndex` + 1. */
function segmentIndexOf(
  names: readonly string[],
  firstMissing: string | undefined,
  lastIndex: number,
): number {
  const missingAt = firstMissing === undefined ? names.length : names.indexOf(firstMissing);
  return Math.min(missingAt, lastIndex + 1);
}

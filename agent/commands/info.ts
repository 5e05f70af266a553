import { verifyReportPrefix } from '../../core/keys.ts';
import type { VerifyReport } from '../../core/verify-report.ts';
import { gapsInWindows } from '../../core/wal-gaps.ts';
import type { Storage } from '../../storage/storage.ts';
import { readVerifyReports } from '../../storage/verify-reports.ts';
import { scanWalArchive } from '../physical/wal-archive.ts';
import { listManifests } from '../repository.ts';
import { parseCommandArgs } from './args.ts';
import type { Command } from './command.ts';
import { formatBytes, setUp } from './setup.ts';

export const info: Command = {
  summary:
    'what the repository can restore: recoverable window per timeline, backups, gaps, last verification',
  usage: `pgkeep info [--json]

Reads the repository (manifests, WAL object names, verification reports; no identity needed) and
prints, per timeline, the recoverable window (from the oldest base backup's start to the newest
archived WAL segment) and the gaps in the WAL sequence; every backup with its stored size
(compressed and encrypted, what the repository holds) and plaintext size (what pg_dump or
pg_basebackup produced); and the last restore verification, or "never".
  --json   the same as one JSON object`,
  async run(context) {
    const { values } = parseCommandArgs(context.args, { json: { type: 'boolean', default: false } });
    const { config, storage } = await setUp(context, { readsWal: true });
    const [manifests, archive, verification] = await Promise.all([
      listManifests(storage, config.cluster),
      scanWalArchive(storage, config.cluster),
      lastVerification(storage, config.cluster),
    ]);
    const backups = manifests.map((m) => ({
      backupId: m.backupId,
      kind: m.kind,
      ...(m.timeline === undefined ? {} : { timeline: m.timeline }),
      startTime: m.startTime,
      stopTime: m.stopTime,
      storedBytes: m.objects.reduce((sum, o) => sum + o.sizeBytes, 0),
      plaintextBytes: m.objects.reduce((sum, o) => sum + o.plaintextSizeBytes, 0),
      databases: m.objects.flatMap((o) => (o.database ? [o.database] : [])),
    }));
    const windows = gapsInWindows(archive.timelines, manifests);
    const timelines = archive.timelines.map((t, i) => {
      const oldestBase = manifests.find((m) => m.kind === 'base' && m.timeline === t.timeline);
      return {
        timeline: t.timeline,
        recoverableFrom: oldestBase ? { time: oldestBase.startTime, backupId: oldestBase.backupId } : null,
        recoverableTo: { segment: t.newestSegment, storedAt: t.newestStoredAt.toISOString() },
        walSegments: t.segments,
        oldestSegment: t.oldestSegment,
        newestSegment: t.newestSegment,
        walStoredBytes: t.storedBytes,
        gaps: t.gaps,
        gapsInWindow: oldestBase?.startWalFile ? (windows[i]?.gaps.length ?? 0) : 0,
      };
    });
    const result = {
      cluster: config.cluster,
      repository: storage.displayUrl,
      timelines,
      historyFiles: archive.historyFiles,
      backups,
      lastVerification: verification,
    };
    if (values.json) {
      context.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
      return 0;
    }
    const out: string[] = [`cluster "${result.cluster}" in ${result.repository}`];
    if (timelines.length === 0) out.push('  no archived WAL: point-in-time recovery is not possible yet');
    for (const t of timelines) {
      const from = t.recoverableFrom
        ? `${t.recoverableFrom.time} (start of base backup ${t.recoverableFrom.backupId})`
        : 'nowhere (no base backup on this timeline)';
      out.push(
        `  timeline ${t.timeline}: recoverable from ${from} to ${t.recoverableTo.storedAt} (WAL segment ${t.recoverableTo.segment} stored)`,
        `    WAL ${t.oldestSegment} to ${t.newestSegment}: ${t.walSegments} segment(s), ${formatBytes(t.walStoredBytes)} stored`,
      );
      for (const g of t.gaps)
        out.push(`    gap: ${g.from} to ${g.to} (${g.missingSegments} segment(s) missing)`);
      if (t.gapsInWindow > 0) {
        out.push(
          `    WARNING: ${t.gapsInWindow} gap(s) inside the window: recovery from an older backup stops at the first gap`,
        );
      }
    }
    out.push('backups (stored = compressed and encrypted, in the repository; plaintext = as produced):');
    if (backups.length === 0) out.push('  none');
    for (const b of backups) {
      out.push(
        `  ${b.backupId}  ${b.kind.padEnd(7)}  ${b.timeline === undefined ? '' : `timeline ${b.timeline}  `}` +
          `${b.startTime} to ${b.stopTime}  stored ${formatBytes(b.storedBytes)}, plaintext ${formatBytes(b.plaintextBytes)}` +
          `${b.databases.length ? `  ${b.databases.join(',')}` : ''}`,
      );
    }
    const v = verification;
    out.push(
      `last verification: ${
        v === null
          ? 'never'
          : 'error' in v
            ? `unknown (${v.error})`
            : `${v.finishedAt} ${v.passed ? 'passed' : 'FAILED'}: backup ${v.backupId} (${v.mode}, from ${v.source}): ${v.summary}`
      }`,
    );
    context.stdout.write(`${out.join('\n')}\n`);
    return 0;
  },
};

type Verification = Pick<
  VerifyReport,
  'runId' | 'backupId' | 'mode' | 'source' | 'finishedAt' | 'passed' | 'summary'
>;

/**
 * The newest verification report: reports live outside the host's own prefix, so a host
 * whose credentials may not read them gets "unknown" with the reason, not a failure.
 */
async function lastVerification(
  storage: Storage,
  cluster: string,
): Promise<Verification | { error: string } | null> {
  try {
    const newest = (await readVerifyReports(storage, cluster)).at(-1);
    if (!newest) return null;
    const { runId, backupId, mode, source, finishedAt, passed, summary } = newest;
    return { runId, backupId, mode, source, finishedAt, passed, summary };
  } catch (error) {
    return { error: `cannot read ${verifyReportPrefix(cluster)}: ${(error as Error).message}` };
  }
}

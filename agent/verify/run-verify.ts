/**
 * `runVerify`: restore a backup into a scratch cluster, check it, measure it, remove it, and
 * return the report. It never prints and never exits; a failed check is a report with
 * `passed: false`, and only a run that could not be carried out (no such backup, no PostgreSQL
 * programs, the repository unreachable) rejects. The scratch cluster is stopped and its directory
 * removed whatever happens, including when `deps.signal` aborts the run.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { VERIFY_REPORT_FORMAT, type VerifyReport } from '../../core/verify-report.ts';
import { ExitCode } from '../exit-codes.ts';
import { listBaseBackups } from '../physical/restore.ts';
import { AGENT_VERSION } from '../version.ts';
import { countRows, restoredDatabases, runAmcheck, runAssertion } from './checks.ts';
import { isObjectFailure, readBackupManifest, selectDumps, verifyLogical } from './logical.ts';
import { verifyPhysical } from './physical.ts';
import {
  makeScratchDirs,
  removeScratch,
  type ScratchServer,
  scratchPgEnv,
  serverUserFor,
} from './scratch-cluster.ts';
import { verifyStream } from './stream.ts';
import type { VerifyDeps, VerifyOptions, VerifyProgress } from './types.ts';

export type { VerifyDeps, VerifyEvent, VerifyOptions, VerifySelection } from './types.ts';

/** The PostgreSQL programs for a backup of `pgVersionNum`: Debian's per-major directory if present. */
export function pgBinFor(
  configured: string | undefined,
  pgVersionNum: number | undefined,
): string | undefined {
  if (configured) return configured;
  if (pgVersionNum === undefined) return undefined;
  const debian = `/usr/lib/postgresql/${Math.floor(pgVersionNum / 10_000)}/bin`;
  return existsSync(join(debian, 'postgres')) ? debian : undefined;
}

/** The stream backup `selection` names, if it names one (`--stream`, or `--backup` of a stream backup). */
async function streamSelection(
  options: VerifyOptions,
  selection: VerifyOptions['selection'],
): Promise<{ stream: string; backupId?: string | undefined } | undefined> {
  if ('stream' in selection) return selection;
  if (!('backupId' in selection) || 'db' in selection || selection.backupId === undefined) return undefined;
  const manifest = await readBackupManifest(options, selection.backupId);
  return manifest.kind === 'stream' && manifest.streamName !== undefined
    ? { stream: manifest.streamName, backupId: manifest.backupId }
    : undefined;
}

export async function runVerify(options: VerifyOptions, deps: VerifyDeps = {}): Promise<VerifyReport> {
  const now = deps.now ?? (() => new Date());
  const startedAt = now();
  const progress: VerifyProgress = {
    backupId: undefined,
    mode: 'logical',
    checks: [],
    measures: {},
    tables: [],
  };
  const selection = options.selection;
  deps.onEvent?.({ phase: 'select', detail: `reading manifests in ${options.storage.displayUrl}` });

  // Which kind of backup decides the path: a logical one restores dumps, a base one recovers, a
  // stream is checked and decrypted (and restored into its command when one is configured).
  const stream = await streamSelection(options, selection);
  if (stream) {
    await verifyStream(options, stream, progress);
    return buildReport(options, deps, progress, startedAt, now());
  }
  let logical: Awaited<ReturnType<typeof selectDumps>> | undefined;
  let pgVersionNum: number | undefined;
  if ('db' in selection) {
    logical = await selectDumps(options, selection);
  } else if ('backupId' in selection && !('stream' in selection)) {
    const manifest = await readBackupManifest(options, selection.backupId);
    if (manifest.kind === 'logical') logical = await selectDumps(options, selection);
    pgVersionNum = manifest.pgVersionNum;
  }
  if ('pitr' in selection)
    pgVersionNum = (await listBaseBackups(options.storage, options.cluster)).at(-1)?.pgVersionNum;
  pgVersionNum = logical?.manifest.pgVersionNum ?? pgVersionNum;
  const pgBin = pgBinFor(deps.pgBin, pgVersionNum);

  const dirs = await makeScratchDirs(options.workDir, await serverUserFor());
  let server: ScratchServer | undefined;
  const started = (s: ScratchServer) => {
    server = s;
  };
  // Interrupted: stop the server at once, so whatever runs against it fails and cleanup follows.
  const onAbort = () => void server?.stop();
  deps.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    let databases: string[] | undefined;
    try {
      if (logical) {
        databases = await verifyLogical(options, deps, logical, dirs, pgBin, progress, started);
      } else {
        await verifyPhysical(
          options,
          deps,
          'pitr' in selection ? selection : { backupId: (selection as { backupId: string }).backupId },
          dirs,
          pgBin,
          progress,
          started,
        );
      }
    } catch (error) {
      if (!isObjectFailure(error)) throw error;
      progress.checks.push({ name: 'objects', passed: false, detail: (error as Error).message });
    }
    const restored = progress.checks.some((c) => c.name === 'restore' && c.passed) && server?.running;
    if (restored) {
      deps.onEvent?.({ phase: 'check', detail: 'pg_amcheck, row counts, assertions' });
      const pg = scratchPgEnv(dirs, pgBin);
      progress.checks.push(await runAmcheck(pg, deps.signal));
      const names = databases ?? (await restoredDatabases(pg));
      try {
        for (const database of names) progress.tables.push(...(await countRows(pg, database)));
        const rows = progress.tables.reduce((sum, t) => sum + t.rows, 0);
        progress.checks.push({
          name: 'row-counts',
          passed: true,
          detail: `${progress.tables.length} tables, ${rows} rows in ${names.length} database${names.length === 1 ? '' : 's'}`,
        });
      } catch (error) {
        progress.checks.push({
          name: 'row-counts',
          passed: false,
          detail: `counting rows failed: ${(error as Error).message}`,
        });
      }
      for (const assertion of options.assertions ?? []) {
        // A logical run restores some databases only; assertions about others are for other runs.
        if (databases && !databases.includes(assertion.database)) continue;
        progress.checks.push(await runAssertion(pg, assertion));
      }
    }
  } finally {
    deps.signal?.removeEventListener('abort', onAbort);
    deps.onEvent?.({ phase: 'cleanup', detail: `removing ${dirs.root}` });
    await server?.stop();
    await removeScratch(dirs);
  }
  // What an interrupted run found is not a verdict on the backup.
  deps.signal?.throwIfAborted();
  return buildReport(options, deps, progress, startedAt, now());
}

function buildReport(
  options: VerifyOptions,
  deps: VerifyDeps,
  progress: VerifyProgress,
  startedAt: Date,
  finishedAt: Date,
): VerifyReport {
  const failed = progress.checks.filter((c) => !c.passed);
  const exitCode =
    failed.length === 0
      ? ExitCode.ok
      : failed.some((c) => c.name === 'objects')
        ? ExitCode.integrity
        : ExitCode.check;
  const backupId = progress.backupId ?? 'unknown';
  const summary =
    failed.length === 0
      ? `backup ${backupId} (${progress.mode}) from ${options.source} verified: ${progress.checks.length} checks passed`
      : `backup ${backupId} (${progress.mode}) from ${options.source} FAILED ${failed[0]?.name}: ${failed[0]?.detail ?? ''}`;
  return {
    format: VERIFY_REPORT_FORMAT,
    runId: options.runId,
    cluster: options.cluster,
    backupId,
    mode: progress.mode,
    source: options.source,
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    passed: failed.length === 0,
    exitCode,
    summary,
    checks: progress.checks,
    measures: progress.measures,
    agentVersion: deps.agentVersion ?? AGENT_VERSION,
    tables: progress.tables.map((t) => ({ ...t })),
  };
}

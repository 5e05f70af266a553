import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { newBackupId } from '../../core/keys.ts';
import {
  lastVerificationByBackup,
  parseVerifyReport,
  serializeVerifyReport,
  type VerifyReport,
} from '../../core/verify-report.ts';
import { openStorage } from '../../storage/open-storage.ts';
import { readVerifyReports, writeVerifyReport } from '../../storage/verify-reports.ts';
import { withWalBundles } from '../../storage/wal-bundles.ts';
import { asExitCode, ExitCode } from '../exit-codes.ts';
import { readIdentityFile } from '../recipients.ts';
import { runVerify, type VerifySelection } from '../verify/run-verify.ts';
import { AGENT_VERSION } from '../version.ts';
import { parseCommandArgs } from './args.ts';
import { type Command, UsageError } from './command.ts';
import { progressLine, resolveRepository, setUp } from './setup.ts';
import { renderHistory, renderReport } from './verify-render.ts';

/** Reports this host kept of its own runs (the spool), for --history beside the repository's. */
async function localReports(spoolDir: string, cluster: string): Promise<VerifyReport[]> {
  const dir = join(spoolDir, 'verify', cluster);
  const names = await readdir(dir).catch(() => [] as string[]);
  const reports: VerifyReport[] = [];
  for (const name of names.filter((n) => n.endsWith('.json'))) {
    const report = parseVerifyReport(await readFile(join(dir, name), 'utf8').catch(() => ''));
    if (report) reports.push(report);
  }
  return reports;
}

export const verify: Command = {
  summary: 'restore a backup into a scratch cluster and check it (restore verification)',
  usage: `pgkeep verify (--db NAME | --backup ID | --stream NAME | --pitr [--target-time T | --target-lsn L]) [--from REPO]
              [--report-to REPO] [--json] [--run-id ID] [--work-dir DIR]
pgkeep verify --history [--from REPO] [--json]
pgkeep verify --from-env   (the cloud verification task: everything from PGKEEP_* variables)

Restores into a private scratch cluster (initdb in a 0700 temp dir, unix socket only, a
configuration pgkeep writes) that is always removed, then checks: the objects against the
manifest, the restore, the PITR target reached, pg_amcheck --heapallindexed, row counts, and the
SQL assertions under verify.assertions. A stream backup (pgkeep stream) is checked and decrypted,
and restored into verify.streams.NAME.restoreCommand when the config names one. Prints a summary
and keeps the report under the spool.
Exit 0 passed, 5 an object failed verification, 7 a check failed. Needs the identity file.
  --db NAME          the newest dump of NAME (with --backup: its dump in that backup)
  --backup ID        one backup: every dump of a logical one, a base one recovered to its end
  --stream NAME      the newest stream backup taken under NAME (with --backup: that one)
  --pitr             a base backup plus WAL to --target-time/--target-lsn, by default to a random
                     point of the window the archive covers (reproducible from the run id)
  --from REPO        read from a target named in the config, or a repository URL (default: repository)
  --report-to REPO   also write the report to REPO under verify/<cluster>/ (needs write access there)
  --json             print the report as JSON
  --history          each backup's last verification: when, from where, result, RTO, RPO
  --run-id ID        name of the report (default: a new time-sortable id)
  --work-dir DIR     where the scratch directory is made (default: the system temp directory)
  --from-env         run as the verification task: source, backup, run id, report key, sealed
                     identity and assertions from the state machine's overrides (docs/verification.md)`,
  async run(context) {
    const { values } = parseCommandArgs(context.args, {
      db: { type: 'string' },
      backup: { type: 'string' },
      pitr: { type: 'boolean', default: false },
      stream: { type: 'string' },
      'target-time': { type: 'string' },
      'target-lsn': { type: 'string' },
      from: { type: 'string' },
      'report-to': { type: 'string' },
      json: { type: 'boolean', default: false },
      history: { type: 'boolean', default: false },
      'run-id': { type: 'string' },
      'work-dir': { type: 'string' },
      'from-env': { type: 'boolean', default: false },
    });
    if (values['from-env']) {
      if (context.args.length !== 1)
        throw new UsageError('--from-env takes every setting from the environment; give no other option');
      return (await import('./verify-from-env.ts')).verifyFromEnv(context);
    }
    const targetTime = values['target-time'];
    const targetLsn = values['target-lsn'];
    if ((targetTime || targetLsn) && !values.pitr)
      throw new UsageError('--target-time and --target-lsn need --pitr');
    if (targetTime && targetLsn) throw new UsageError('give at most one of --target-time and --target-lsn');
    if (targetTime && Number.isNaN(Date.parse(targetTime))) {
      throw new UsageError(
        `--target-time "${targetTime}" is not a time: use ISO 8601, e.g. 2026-11-29T23:00:00Z`,
      );
    }
    if (targetLsn && !/^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/.test(targetLsn)) {
      throw new UsageError(`--target-lsn "${targetLsn}" is not an LSN: use the form 0/3000028`);
    }
    if (values.stream !== undefined && values.db !== undefined)
      throw new UsageError('--stream and --db name different kinds of backup: give one');
    const modes = [
      values.db !== undefined || values.backup !== undefined || values.stream !== undefined,
      values.pitr,
      values.history,
    ].filter(Boolean);
    if (modes.length !== 1)
      throw new UsageError('give one of --db NAME, --backup ID, --stream NAME, --pitr or --history');
    if (values.pitr && values.backup)
      throw new UsageError('--pitr picks its base backup; leave out --backup');

    const { config } = await setUp(context);
    const from = resolveRepository(config, values.from);
    // The source may be a replication target's copy, whose WAL may be in bundles.
    const storage = withWalBundles(openStorage(from.url));
    if (values.history) {
      const byRun = new Map<string, VerifyReport>();
      for (const r of [
        ...(await localReports(config.spoolDir, config.cluster)),
        ...(await readVerifyReports(storage, config.cluster)),
      ]) {
        byRun.set(r.runId, r);
      }
      const latest = lastVerificationByBackup([...byRun.values()]);
      context.stdout.write(
        values.json ? `${JSON.stringify(latest, null, 2)}\n` : renderHistory(latest, config.cluster),
      );
      return ExitCode.ok;
    }

    const selection: VerifySelection = values.pitr
      ? { pitr: true, targetTime, targetLsn }
      : values.stream !== undefined
        ? { stream: values.stream, backupId: values.backup }
        : values.db !== undefined
          ? { db: values.db, backupId: values.backup }
          : { backupId: values.backup as string };
    const identities = await readIdentityFile(config.identityFile);
    const runId = values['run-id'] ?? newBackupId(new Date());
    const abort = new AbortController();
    const stop = () => abort.abort(new Error('interrupted'));
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    const progress = progressLine(context);
    let report: VerifyReport;
    try {
      report = await runVerify(
        {
          storage,
          source: from.name,
          cluster: config.cluster,
          identities,
          selection,
          assertions: config.verify.assertions,
          streamRestoreCommands: Object.fromEntries(
            Object.entries(config.verify.streams).map(([name, stream]) => [name, stream.restoreCommand]),
          ),
          runId,
          workDir: values['work-dir'] ?? tmpdir(),
        },
        {
          pgBin: config.pgBin,
          signal: abort.signal,
          agentVersion: AGENT_VERSION,
          onEvent: (event) => {
            progress.update(`verify: ${event.detail}`);
            if (context.env.PGKEEP_DEBUG === '1')
              context.stderr.write(`${new Date().toISOString()} verify: ${event.detail}\n`);
          },
        },
      );
    } finally {
      progress.done();
      process.removeListener('SIGINT', stop);
      process.removeListener('SIGTERM', stop);
    }

    const saved: string[] = [];
    const localDir = join(config.spoolDir, 'verify', config.cluster);
    try {
      await mkdir(localDir, { recursive: true, mode: 0o700 });
      const path = join(localDir, `${runId}.json`);
      await writeFile(path, serializeVerifyReport(report), { mode: 0o600, flag: 'wx' });
      saved.push(`saved to ${path}`);
    } catch (error) {
      context.stderr.write(
        `pgkeep verify: could not keep a local copy of the report in ${localDir}: ${(error as Error).message}\n`,
      );
    }
    if (values['report-to'] !== undefined) {
      const to = resolveRepository(config, values['report-to']);
      const key = await writeVerifyReport(openStorage(to.url), report);
      saved.push(`written to ${key} in ${to.name}`);
    }
    context.stdout.write(values.json ? serializeVerifyReport(report) : renderReport(report, saved));
    if (!report.passed) context.stderr.write(`pgkeep verify: ${report.summary}\n`);
    return asExitCode(report.exitCode);
  },
};

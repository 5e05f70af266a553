/**
 * The restore-verification report: what `pgkeep verify` (and the Fargate task that runs it) writes,
 * and what the pipeline reads. Reports live under `verify/<cluster>/`, outside every host's writable
 * prefix (`v1/<cluster>/`), so a host cannot vouch for its own backups (docs/architecture.md,
 * "Trust model"). Readers accept a report only from there.
 */
import { z } from 'zod';

export const VERIFY_REPORT_FORMAT = 'pgkeep.verify-report.v1';

const isoTime = z.iso.datetime();

/** One check the verifier ran, in the order it ran them. */
export const VerifyCheckSchema = z.looseObject({
  /** e.g. `objects`, `restore`, `recovery-target`, `amcheck`, `row-counts`, `assertion:<name>`. */
  name: z.string().min(1),
  passed: z.boolean(),
  /** What was found, for people: the object, WAL segment, assertion or table that failed. */
  detail: z.string().optional(),
});

export const VerifyReportSchema = z.looseObject({
  format: z.literal(VERIFY_REPORT_FORMAT),
  runId: z.string().min(1),
  cluster: z.string().min(1),
  backupId: z.string().min(1),
  /** `logical` (one database's dump), `base` (base backup to its consistent point), `pitr` (base + WAL to a target). */
  mode: z.enum(['logical', 'base', 'pitr', 'stream']),
  /** The repository the objects were read from: `ingest`, or a replication target's name. */
  source: z.string().min(1),
  startedAt: isoTime,
  finishedAt: isoTime,
  passed: z.boolean(),
  /** The agent exit code the run ended with (0 passed, 5 an object failed verification, 7 a check failed). */
  exitCode: z.number().int(),
  /** One line for people: what failed (named), or what was checked. */
  summary: z.string(),
  checks: z.array(VerifyCheckSchema),
  measures: z
    .looseObject({
      /** Seconds from the start of the restore to a usable cluster: the RTO actually achieved. */
      restoreSeconds: z.number().nonnegative().optional(),
      /** The newest commit the restored cluster holds: the RPO actually achieved. */
      newestCommitTime: isoTime.optional(),
      /** How `newestCommitTime` was found: `commit-timestamp` (track_commit_timestamp) or `recovery-end`. */
      newestCommitSource: z.enum(['commit-timestamp', 'recovery-end', 'dump-start']).optional(),
      /** PITR: the target asked for, and the LSN replay reached. */
      targetTime: isoTime.optional(),
      targetLsn: z.string().optional(),
      reachedLsn: z.string().optional(),
    })
    .optional(),
  agentVersion: z.string().optional(),
  /** Rows in every ordinary table of the restored databases (optional: older reports lack it). */
  tables: z
    .array(z.looseObject({ database: z.string(), table: z.string(), rows: z.number().int().nonnegative() }))
    .optional(),
});

export type VerifyReport = z.infer<typeof VerifyReportSchema>;
export type VerifyCheck = z.infer<typeof VerifyCheckSchema>;

/** Parses a report; undefined when it is not one (a report that cannot be read proves nothing). */
export function parseVerifyReport(json: string): VerifyReport | undefined {
  try {
    const result = VerifyReportSchema.safeParse(JSON.parse(json));
    return result.success ? result.data : undefined;
  } catch {
    return undefined;
  }
}

export function serializeVerifyReport(report: VerifyReport): string {
  return `${JSON.stringify(VerifyReportSchema.parse(report), null, 2)}\n`;
}

/** The newest report of each backup, newest backup first. */
export function lastVerificationByBackup(reports: readonly VerifyReport[]): VerifyReport[] {
  const latest = new Map<string, VerifyReport>();
  for (const r of reports) {
    const seen = latest.get(r.backupId);
    if (!seen || seen.finishedAt <= r.finishedAt) latest.set(r.backupId, r);
  }
  return [...latest.values()].sort((a, b) => b.backupId.localeCompare(a.backupId));
}

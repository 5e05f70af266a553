/**
 * Verification reports in a repository: written create-only under `verify/<cluster>/`, read back
 * for `pgkeep verify --history`. A report that does not parse proves nothing and is skipped.
 */
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { verifyReportKey, verifyReportPrefix } from '../../core/keys.ts';
import { parseVerifyReport, serializeVerifyReport, type VerifyReport } from '../../core/verify-report.ts';
import type { Storage } from '../../storage/storage.ts';

/** Writes `report` to `verify/<cluster>/<runId>.json` (create-only); resolves to the key. */
export async function writeVerifyReport(storage: Storage, report: VerifyReport): Promise<string> {
  const key = verifyReportKey(report.cluster, report.runId);
  await storage.put(key, Readable.from([serializeVerifyReport(report)]), { ifAbsent: true });
  return key;
}

/**
 * Every readable report of `cluster` in `storage`, oldest first. Only reports about `cluster` stored
 * under their own key count: a report copied to another cluster's or run's key proves nothing.
 */
export async function readVerifyReports(storage: Storage, cluster: string): Promise<VerifyReport[]> {
  const reports: VerifyReport[] = [];
  for await (const info of storage.list(verifyReportPrefix(cluster))) {
    if (!info.key.endsWith('.json')) continue;
    const report = parseVerifyReport(await text(await storage.get(info.key)));
    if (report && report.cluster === cluster && info.key === verifyReportKey(cluster, report.runId))
      reports.push(report);
  }
  return reports.sort((a, b) => a.finishedAt.localeCompare(b.finishedAt));
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

/**
 * Verification reports in a repository: written create-only under `verify/<cluster>/` and read
 * back, in one place, by `pgkeep verify --history` and `pgkeep info`, and by the pipeline's
 * pick-backup, freshness and retention. A report that does not parse, is about another cluster,
 * or is not stored under its own key proves nothing and is skipped.
 */
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { verifyReportKey, verifyReportPrefix } from '../core/keys.ts';
import { parseVerifyReport, serializeVerifyReport, type VerifyReport } from '../core/verify-report.ts';
import type { Storage } from './storage.ts';

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
    const report = await readVerifyReport(storage, cluster, info.key);
    if (report) reports.push(report);
  }
  return reports.sort((a, b) => a.finishedAt.localeCompare(b.finishedAt));
}

/**
 * The report listed at `key` under `verify/<cluster>/` when it counts (see readVerifyReports), else
 * undefined; a key that is no report is not read.
 */
export async function readVerifyReport(
  storage: Storage,
  cluster: string,
  key: string,
): Promise<VerifyReport | undefined> {
  if (!key.endsWith('.json')) return undefined;
  const report = parseVerifyReport(await text(await storage.get(key)));
  return report && report.cluster === cluster && key === verifyReportKey(cluster, report.runId)
    ? report
    : undefined;
}

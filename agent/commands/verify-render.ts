/** How `pgkeep verify` shows a report and a history on one screen. */
import type { VerifyReport } from '../../core/verify-report.ts';

function seconds(value: number | undefined): string {
  return value === undefined ? '-' : `${value.toFixed(1)} s`;
}

/** The one-screen summary of a run. */
export function renderReport(report: VerifyReport, saved: readonly string[]): string {
  const m = report.measures ?? {};
  const lines = [
    `verify backup ${report.backupId} (${report.mode}) from ${report.source}: ${report.passed ? 'PASSED' : `FAILED (exit ${report.exitCode})`}`,
    `  run            ${report.runId}`,
    `  restore (RTO)  ${seconds(m.restoreSeconds)}`,
    `  newest commit  ${m.newestCommitTime ?? '-'}${m.newestCommitSource ? ` (${m.newestCommitSource})` : ''}`,
  ];
  if (m.targetLsn || m.targetTime || m.reachedLsn) {
    const target = m.targetTime
      ? `time ${m.targetTime}`
      : m.targetLsn
        ? `lsn ${m.targetLsn}`
        : 'end of backup';
    lines.push(`  target         ${target}; replay reached ${m.reachedLsn ?? '-'}`);
  }
  lines.push('  checks:');
  for (const c of report.checks) {
    lines.push(`    ${c.passed ? 'ok  ' : 'FAIL'}  ${c.name.padEnd(18)} ${c.detail ?? ''}`);
  }
  const tables = report.tables ?? [];
  if (tables.length > 0) {
    lines.push('  largest tables:');
    for (const t of [...tables].sort((a, b) => b.rows - a.rows).slice(0, 5)) {
      lines.push(`    ${String(t.rows).padStart(12)}  ${t.database}: ${t.table}`);
    }
  }
  for (const where of saved) lines.push(`  report         ${where}`);
  return `${lines.join('\n')}\n`;
}

/** `--history`: each backup's last verification. */
export function renderHistory(reports: readonly VerifyReport[], cluster: string): string {
  if (reports.length === 0) return `no verification reports of cluster "${cluster}"\n`;
  const rows = [
    ['BACKUP', 'VERIFIED AT', 'SOURCE', 'MODE', 'RESULT', 'RTO', 'NEWEST COMMIT (RPO)'],
    ...reports.map((r) => [
      r.backupId,
      r.finishedAt,
      r.source,
      r.mode,
      r.passed ? 'passed' : `FAILED (${r.checks.find((c) => !c.passed)?.name ?? r.exitCode})`,
      seconds(r.measures?.restoreSeconds),
      r.measures?.newestCommitTime ?? '-',
    ]),
  ];
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((row) => row[i]?.length ?? 0))) ?? [];
  return rows
    .map(
      (row) =>
        `${row
          .map((cell, i) => cell.padEnd(widths[i] ?? 0))
          .join('  ')
          .trimEnd()}\n`,
    )
    .join('');
}

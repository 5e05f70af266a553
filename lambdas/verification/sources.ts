/**
 * Where a verification run restores from: ingest or one replication target, as the repository URL
 * the agent opens (storage/open-storage.ts) and, for an S3-compatible provider, the Secrets Manager
 * secret the task reads its key from. Credentials themselves never pass through the state machine:
 * its execution history is readable by anyone who may read the console.
 */
import type { VerifyReport } from '../../core/verify-report.ts';
import { INGEST_LOCATION, type PipelineEnv, type RuntimeTarget } from '../lib/pipeline-env.ts';

/** The name reports and metrics give the ingest bucket as a source. */
export const INGEST_SOURCE = INGEST_LOCATION;

export interface VerificationSource {
  /** `ingest` or the target's name. */
  readonly name: string;
  /** The agent's repository URL for it. */
  readonly repository: string;
  /** The secret with the provider's `{"accessKeyId","secretAccessKey"}`; '' for ingest and AWS targets (task role). */
  readonly credentialsSecretArn: string;
}

function withSlash(prefix: string): string {
  return prefix === '' || prefix.endsWith('/') ? prefix : `${prefix}/`;
}

/** The repository URL of a target, with the same bucket, prefix, endpoint and region replication writes to. */
export function targetRepositoryUrl(target: RuntimeTarget): string {
  const base = `s3://${target.bucket}/${withSlash(target.prefix)}`;
  const query = new URLSearchParams({ region: target.region });
  if (target.type === 's3-compatible') {
    query.set('endpoint', target.endpoint);
    query.set('path-style', String(target.forcePathStyle));
  }
  return `${base}?${query.toString()}`;
}

/** Ingest first, then every target in config order: the order ties are broken in. */
export function verificationSources(env: PipelineEnv): VerificationSource[] {
  return [
    {
      name: INGEST_SOURCE,
      repository: env.ingestRegion
        ? `s3://${env.ingestBucket}/?${new URLSearchParams({ region: env.ingestRegion })}`
        : `s3://${env.ingestBucket}/`,
      credentialsSecretArn: '',
    },
    ...env.targets.map((target) => ({
      name: target.name,
      repository: targetRepositoryUrl(target),
      credentialsSecretArn: target.type === 's3-compatible' ? target.credentialsSecretArn : '',
    })),
  ];
}

/** Each source's last run in `reports` (passed or not); sources never verified are absent. */
export function lastRunBySource(reports: readonly VerifyReport[]): Map<string, string> {
  const last = new Map<string, string>();
  for (const report of reports) {
    const seen = last.get(report.source);
    if (seen === undefined || report.finishedAt > seen) last.set(report.source, report.finishedAt);
  }
  return last;
}

/** The sources in the order to try them: never verified first, then the least recently verified; ties in config order. */
export function sourcesByStaleness(
  sources: readonly VerificationSource[],
  lastRun: ReadonlyMap<string, string>,
): VerificationSource[] {
  return sources
    .map((source, index) => ({ source, index, last: lastRun.get(source.name) ?? '' }))
    .sort((a, b) => (a.last < b.last ? -1 : a.last > b.last ? 1 : a.index - b.index))
    .map(({ source }) => source);
}

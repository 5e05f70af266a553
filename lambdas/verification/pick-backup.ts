/**
 * "Pick backup to verify": chooses the cluster (the one verified longest ago, unless the execution
 * input names one), the source to restore from (ingest or a target: the one whose copy was verified
 * longest ago, so every provider's copy is restored in turn), the backup (the newest at that source,
 * unless named), and the run id and report key the restore task writes to. What was verified when
 * comes from the verifier's own reports under `verify/<cluster>/` in ingest only.
 */

import { backupIdOfManifestKey, manifestKey, manifestsPrefix, verifyReportKey } from '../../core/keys.ts';
import { readManifest } from '../../storage/manifests.ts';
import { readVerifyReports } from '../../storage/verify-reports.ts';
import type { Location, LocationFactory } from '../lib/locations.ts';
import { logDecision } from '../lib/log.ts';
import type { PipelineEnv } from '../lib/pipeline-env.ts';
import { defineTask, lambdaHandler } from '../lib/task.ts';
import {
  INGEST_SOURCE,
  lastRunBySource,
  sourcesByStaleness,
  type VerificationSource,
  verificationSources,
} from './sources.ts';
import type { PickBackupInput, PickedBackup } from './types.ts';

/** Nothing to verify: no manifest in ingest for the cluster(s). */
export class NoBackupToVerifyError extends Error {
  override name = 'NoBackupToVerifyError';
}

async function newestBackupId(location: Location, cluster: string): Promise<string | undefined> {
  let newest: string | undefined;
  for await (const object of location.storage.list(manifestsPrefix(cluster))) {
    const id = backupIdOfManifestKey(object.key);
    if (id !== undefined && (newest === undefined || id > newest)) newest = id;
  }
  return newest;
}

/**
 * A stream backup is any command's output, not PostgreSQL's: every verification image can check
 * and decrypt it, so it goes to the newest.
 */
function newestImageMajor(env: NodeJS.ProcessEnv = process.env): number {
  const majors = JSON.parse(env.PGKEEP_VERIFY_MAJOR_VERSIONS ?? '[]') as number[];
  const newest = Math.max(...majors);
  if (!Number.isInteger(newest))
    throw new Error('environment variable PGKEEP_VERIFY_MAJOR_VERSIONS names no PostgreSQL major version');
  return newest;
}

function locationOf(source: VerificationSource, env: PipelineEnv, locations: LocationFactory) {
  if (source.name === INGEST_SOURCE) return locations.ingest();
  const target = env.targets.find((t) => t.name === source.name);
  if (!target) throw new Error(`unknown source "${source.name}"`);
  return locations.target(target);
}

export async function pickBackup(
  input: PickBackupInput,
  env: PipelineEnv,
  locations: LocationFactory,
  now: Date = new Date(),
): Promise<PickedBackup> {
  const ingest = await locations.ingest();
  let clusters = env.clusters;
  if (input.cluster !== undefined) {
    if (!env.clusters.includes(input.cluster))
      throw new Error(`unknown cluster "${input.cluster}"; known clusters: ${env.clusters.join(', ')}`);
    clusters = [input.cluster];
  }
  const sources = verificationSources(env);
  if (input.source !== undefined && !sources.some((s) => s.name === input.source))
    throw new Error(
      `unknown source "${input.source}"; known sources: ${sources.map((s) => s.name).join(', ')}`,
    );

  const candidates: { cluster: string; lastRun: string; lastBySource: Map<string, string> }[] = [];
  for (const cluster of clusters) {
    if (input.backupId === undefined && (await newestBackupId(ingest, cluster)) === undefined) continue;
    // The verifier's own reports only: under verify/<cluster>/ in ingest, where no host may write.
    const reports = await readVerifyReports(ingest.storage, cluster);
    candidates.push({
      cluster,
      lastRun: reports.at(-1)?.finishedAt ?? '',
      lastBySource: lastRunBySource(reports),
    });
  }
  candidates.sort((a, b) => (a.lastRun < b.lastRun ? -1 : a.lastRun > b.lastRun ? 1 : 0));
  const chosen = candidates[0];
  if (!chosen)
    throw new NoBackupToVerifyError(
      `no backup to verify: no manifest under ${clusters.map(manifestsPrefix).join(', ')} in ingest`,
    );

  // The stalest source that holds a backup of the cluster (a target may not have the newest one yet).
  const order =
    input.source !== undefined
      ? sources.filter((s) => s.name === input.source)
      : sourcesByStaleness(sources, chosen.lastBySource);
  for (const source of order) {
    const location = await locationOf(source, env, locations);
    const backupId = input.backupId ?? (await newestBackupId(location, chosen.cluster));
    if (backupId === undefined) continue;
    const key = manifestKey(chosen.cluster, backupId);
    if ((await location.storage.head(key)) === undefined) continue;
    const { manifest } = await readManifest(location.storage, key);
    const runId = `${now
      .toISOString()
      .replace(/[-:]/g, '')
      .replace(/\.\d{3}Z$/, 'Z')}-${backupId}`;
    logDecision('picked backup to verify', { cluster: chosen.cluster, backupId, source: source.name, runId });
    return {
      cluster: chosen.cluster,
      backupId,
      manifestKey: key,
      kind: manifest.kind,
      pgMajor:
        manifest.pgVersionNum === undefined ? newestImageMajor() : Math.floor(manifest.pgVersionNum / 10_000),
      runId,
      reportKey: verifyReportKey(chosen.cluster, runId),
      source: source.name,
      repository: source.repository,
      sourceSecretArn: source.credentialsSecretArn,
    };
  }
  throw new NoBackupToVerifyError(
    `no backup to verify: ${input.backupId ? `backup ${input.backupId}` : 'no backup'} of cluster ${chosen.cluster} at ${order.map((s) => s.name).join(', ')}`,
  );
}

export const pickBackupTask = defineTask({
  id: 'verification/pick-backup',
  run: ({ cluster, backupId, source }, { env, locations, now }) =>
    pickBackup({ cluster, backupId, source }, env, locations, now?.()),
});

export const handler = lambdaHandler(pickBackupTask);

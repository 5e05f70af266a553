/**
 * "Pick backup to verify": chooses the cluster (the one verified longest ago, unless the execution
 * input names one), its newest backup (unless named), and the run id and report key the restore
 * task writes to.
 */
import {
  backupIdOfManifestKey,
  manifestKey,
  manifestsPrefix,
  verifyReportKey,
  verifyReportPrefix,
} from '../../core/keys.ts';
import { mapTransient } from '../../storage/failure.ts';
import { readManifest } from '../../storage/manifests.ts';
import { lambdaDefaults } from '../lib/defaults.ts';
import { parseInput } from '../lib/input.ts';
import type { Location, LocationFactory } from '../lib/locations.ts';
import type { PipelineEnv } from '../lib/pipeline-env.ts';
import { type PickBackupInput, PickBackupInputSchema, type PickedBackup } from './types.ts';

/** Nothing to verify: no manifest in ingest for the cluster(s). */
export class NoBackupToVerifyError extends Error {
  override name = 'NoBackupToVerifyError';
}

async function lastKey(location: Location, prefix: string): Promise<string | undefined> {
  let last: string | undefined;
  for await (const object of location.storage.list(prefix)) last = object.key;
  return last;
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
  // Report keys start with the run id, which starts with a UTC timestamp: the last key is the newest run.
  const candidates: { cluster: string; backupId: string; lastRun: string }[] = [];
  for (const cluster of clusters) {
    const backupId = input.backupId ?? (await newestBackupId(ingest, cluster));
    if (backupId === undefined) continue;
    candidates.push({
      cluster,
      backupId,
      lastRun: (await lastKey(ingest, verifyReportPrefix(cluster))) ?? '',
    });
  }
  candidates.sort((a, b) => (a.lastRun < b.lastRun ? -1 : a.lastRun > b.lastRun ? 1 : 0));
  const chosen = candidates[0];
  if (!chosen)
    throw new NoBackupToVerifyError(
      `no backup to verify: no manifest under ${clusters.map(manifestsPrefix).join(', ')} in ingest`,
    );
  const key = manifestKey(chosen.cluster, chosen.backupId);
  const { manifest } = await readManifest(ingest.storage, key);
  const runId = `${now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}Z$/, 'Z')}-${chosen.backupId}`;
  return {
    cluster: chosen.cluster,
    backupId: chosen.backupId,
    manifestKey: key,
    kind: manifest.kind,
    pgMajor:
      manifest.pgVersionNum === undefined ? newestImageMajor() : Math.floor(manifest.pgVersionNum / 10_000),
    runId,
    reportKey: verifyReportKey(chosen.cluster, runId),
  };
}

export async function handler(input: PickBackupInput): Promise<PickedBackup> {
  const { env, locations } = lambdaDefaults();
  const { cluster, backupId } = parseInput(PickBackupInputSchema, input ?? {}, 'verification/pick-backup');
  return mapTransient(() => pickBackup({ cluster, backupId }, env, locations));
}

/**
 * "Plan retention for target": reads what one target holds (manifests, verification reports, WAL),
 * asks the pure planner (core/retention-planner.ts) what the target's policy keeps, and returns the
 * deletions in batches, in the planner's order.
 */
import { text } from 'node:stream/consumers';
import {
  backupIdOfManifestKey,
  clusterPrefix,
  manifestsPrefix,
  parseWalKey,
  walPrefix,
} from '../../core/keys.ts';
import { parseManifest } from '../../core/manifest.ts';
import {
  planRetention,
  type RetentionBackup,
  type RetentionPolicy,
  type RetentionWalFile,
  retentionBackupFromManifest,
} from '../../core/retention-planner.ts';
import { lambdaDefaults } from '../lib/defaults.ts';
import { parseInput } from '../lib/input.ts';
import { type Location, type LocationFactory, mapTransient } from '../lib/locations.ts';
import { findTarget, PipelineConfigError, type PipelineEnv } from '../lib/pipeline-env.ts';
import { parseVerifyReport } from '../verification/report.ts';
import {
  type DeleteBatch,
  type PlanRetentionInput,
  PlanRetentionInputSchema,
  type PlanRetentionOutput,
} from './types.ts';

/** Keys per "Delete expired batch" and per run: what fits a Step Functions payload with room to spare. */
export const DELETE_BATCH_SIZE = 250;
export const MAX_DELETIONS_PER_RUN = 1500;

/** PGKEEP_RETENTION_POLICIES: target name -> policy, as the CDK app wrote it from the deploy config. */
export function readPolicies(env: NodeJS.ProcessEnv = process.env): Record<string, RetentionPolicy> {
  const raw = env.PGKEEP_RETENTION_POLICIES;
  if (!raw) throw new PipelineConfigError('environment variable PGKEEP_RETENTION_POLICIES is not set');
  return JSON.parse(raw) as Record<string, RetentionPolicy>;
}

async function clusterInput(location: Location, cluster: string) {
  const verified = new Set<string>();
  for await (const object of location.storage.list(`${clusterPrefix(cluster)}verify/`)) {
    const report = parseVerifyReport(await text(await location.storage.get(object.key)));
    if (report?.passed) verified.add(report.backupId);
  }
  const backups: RetentionBackup[] = [];
  for await (const object of location.storage.list(manifestsPrefix(cluster))) {
    if (backupIdOfManifestKey(object.key) === undefined) continue;
    const manifest = parseManifest(
      await text(await location.storage.get(object.key)),
      `${location.name}:${object.key}`,
    );
    backups.push(retentionBackupFromManifest(manifest, object.key, verified.has(manifest.backupId)));
  }
  const walFiles: RetentionWalFile[] = [];
  for await (const object of location.storage.list(walPrefix(cluster))) {
    const wal = parseWalKey(object.key);
    if (wal)
      walFiles.push({
        key: object.key,
        walFileName: wal.walFileName,
        time: object.lastModified,
        sizeBytes: object.sizeBytes,
      });
  }
  return { backups, walFiles };
}

export async function planTargetRetention(
  input: PlanRetentionInput,
  env: PipelineEnv,
  locations: LocationFactory,
  policies: Record<string, RetentionPolicy>,
  now: Date = new Date(),
): Promise<PlanRetentionOutput> {
  const policy = policies[input.target];
  if (!policy) throw new PipelineConfigError(`no retention policy for target "${input.target}"`);
  const target = await locations.target(findTarget(env, input.target));
  const deletions: string[] = [];
  const warnings: string[] = [];
  let keptBackups = 0;
  let expiredBackups = 0;
  let lockedObjects = 0;
  for (const cluster of env.clusters) {
    const { backups, walFiles } = await clusterInput(target, cluster);
    if (backups.length === 0) continue;
    const plan = planRetention({ backups, walFiles, policy, now });
    deletions.push(...plan.deletions.map((d) => d.key));
    warnings.push(...plan.warnings.map((w) => `${cluster}: ${w}`));
    keptBackups += plan.summary.backupsKept;
    expiredBackups += plan.summary.backupsDeleted;
    lockedObjects += plan.locked.length;
  }
  const thisRun = deletions.slice(0, MAX_DELETIONS_PER_RUN);
  const deleteBatches: DeleteBatch[] = [];
  for (let i = 0; i < thisRun.length; i += DELETE_BATCH_SIZE)
    deleteBatches.push({ keys: thisRun.slice(i, i + DELETE_BATCH_SIZE) });
  return {
    target: input.target,
    deleteBatches,
    keptBackups,
    expiredBackups,
    lockedObjects,
    more: deletions.length > thisRun.length,
    warnings: warnings.slice(0, 10),
  };
}

export async function handler(input: PlanRetentionInput): Promise<PlanRetentionOutput> {
  const { env, locations } = lambdaDefaults();
  return mapTransient(() =>
    planTargetRetention(
      parseInput(PlanRetentionInputSchema, input, 'retention/plan-retention'),
      env,
      locations,
      readPolicies(),
    ),
  );
}

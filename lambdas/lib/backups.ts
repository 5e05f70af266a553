/**
 * What the pipeline knows of one cluster's backups at a location, for retention (at a target) and
 * replication (at ingest) alike, so both run the planner on the same kind of input:
 *
 * - backups from validated manifests only (storage/manifests.ts); the rejected ones are returned
 *   so the run reports and alarms on them, and nothing they name is ever deleted or kept for them;
 * - each backup's time is when ingest stored its manifest (LastModified there, a server time the
 *   host cannot choose), falling back to the location's own LastModified when ingest no longer
 *   has the manifest: a target's copy is younger than the backup, never older;
 * - "verified" comes only from reports under `verify/<cluster>/` in ingest, which no host may
 *   write, and only from a report naming this cluster.
 *
 * docs/architecture.md, "Trust model", says why.
 */
import { text } from 'node:stream/consumers';
import { manifestsPrefix, parseWalKey, verifyReportPrefix, walPrefix } from '../../core/keys.ts';
import {
  planRetention,
  type RetentionBackup,
  type RetentionPolicy,
  type RetentionWalFile,
  retentionBackupFromManifest,
} from '../../core/retention-planner.ts';
import { parseVerifyReport } from '../../core/verify-report.ts';
import { listManifests, type RejectedManifest } from '../../storage/manifests.ts';
import type { Location } from './locations.ts';
import { PipelineConfigError } from './pipeline-env.ts';

/** Backup ids of `cluster` that a passed restore verification vouches for: reports in ingest only. */
export async function verifiedBackupIds(ingest: Location, cluster: string): Promise<Set<string>> {
  const verified = new Set<string>();
  for await (const object of ingest.storage.list(verifyReportPrefix(cluster))) {
    const report = parseVerifyReport(await text(await ingest.storage.get(object.key)));
    if (report?.passed && report.cluster === cluster) verified.add(report.backupId);
  }
  return verified;
}

export interface ClusterBackups {
  readonly backups: RetentionBackup[];
  readonly walFiles: RetentionWalFile[];
  /** Manifests at `at` that failed validation: reported and alarmed, never acted on. */
  readonly rejected: RejectedManifest[];
}

/** The planner's input for `cluster` at `at` (see the module comment for where each part comes from). */
export async function clusterBackups(
  at: Location,
  ingest: Location,
  cluster: string,
): Promise<ClusterBackups> {
  const storedAtIngest = new Map<string, Date>();
  for await (const object of ingest.storage.list(manifestsPrefix(cluster)))
    storedAtIngest.set(object.key, object.lastModified);
  const verified = await verifiedBackupIds(ingest, cluster);
  const { manifests, rejected } = await listManifests(at.storage, cluster);
  const backups = manifests.map((m) =>
    retentionBackupFromManifest(
      m.manifest,
      m.key,
      verified.has(m.manifest.backupId),
      storedAtIngest.get(m.key) ?? m.storedAt,
    ),
  );
  const walFiles: RetentionWalFile[] = [];
  for await (const object of at.storage.list(walPrefix(cluster))) {
    const wal = parseWalKey(object.key);
    if (wal)
      walFiles.push({
        key: object.key,
        walFileName: wal.walFileName,
        time: object.lastModified,
        sizeBytes: object.sizeBytes,
      });
  }
  return { backups, walFiles, rejected };
}

/** PGKEEP_RETENTION_POLICIES: target name -> policy, as the CDK app wrote it from the deploy config. */
export function readPolicies(env: NodeJS.ProcessEnv = process.env): Record<string, RetentionPolicy> {
  const raw = env.PGKEEP_RETENTION_POLICIES;
  if (!raw) throw new PipelineConfigError('environment variable PGKEEP_RETENTION_POLICIES is not set');
  return JSON.parse(raw) as Record<string, RetentionPolicy>;
}

/**
 * The keys of `cluster` in ingest that `policy` drops at `now`: what retention would delete at a
 * target holding them. Replication never copies them, so what retention deleted at a target is
 * never written back (and the freshness lag does not wait for them). The planner is run on
 * ingest's backups, a superset of any target's, with the same server times retention uses, so
 * whatever it drops retention has dropped (or will drop) at the target too. Rejected manifests
 * are returned for the run's report.
 */
export async function keysPolicyDrops(
  ingest: Location,
  cluster: string,
  policy: RetentionPolicy | undefined,
  now: Date,
): Promise<{ dropped: Set<string>; rejected: RejectedManifest[] }> {
  if (!policy) return { dropped: new Set(), rejected: [] };
  const { backups, walFiles, rejected } = await clusterBackups(ingest, ingest, cluster);
  if (backups.length === 0) return { dropped: new Set(), rejected };
  const plan = planRetention({ backups, walFiles, policy, now });
  return { dropped: new Set(plan.deletions.map((d) => d.key)), rejected };
}

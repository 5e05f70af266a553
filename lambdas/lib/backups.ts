import { manifestsPrefix, parseWalKey, walPrefix } from '../../core/keys.ts';
import {
  planRetention,
  type RetentionBackup,
  type RetentionPolicy,
  type RetentionWalFile,
  retentionBackupFromManifest,
} from '../../core/retention-planner.ts';
import { parseWalBundleKey, walBundlesPrefix } from '../../core/wal-bundle.ts';
import { listManifests, type RejectedManifest } from '../../storage/manifests.ts';
import { readVerifyReports } from '../../storage/verify-reports.ts';
import type { Location } from './locations.ts';
import { PipelineConfigError } from './pipeline-env.ts';

/** Backup ids of `cluster` that a passed restore verification vouches for: reports in ingest only. */
async function verifiedBackupIds(ingest: Location, cluster: string): Promise<Set<string>> {
  const reports = await readVerifyReports(ingest.storage, cluster);
  return new Set(reports.filter((r) => r.passed).map((r) => r.backupId));
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
  // A WAL bundle at a target (core/wal-bundle.ts) is one file named by its last segment: the
  // planner deletes it only when that segment, and so every member, precedes what must be kept.
  // Retention never rewrites a bundle, and needs no read of its index.
  const walNamed: [string, (key: string) => string | undefined][] = [
    [walBundlesPrefix(cluster), (key) => parseWalBundleKey(key)?.last],
    [walPrefix(cluster), (key) => parseWalKey(key)?.walFileName],
  ];
  for (const [prefix, walFileNameOf] of walNamed)
    for await (const object of at.storage.list(prefix)) {
      const walFileName = walFileNameOf(object.key);
      if (walFileName)
        walFiles.push({
          key: object.key,
          walFileName,
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
  ingestBackups: IngestBackups = readIngestBackups,
): Promise<{ dropped: Set<string>; rejected: RejectedManifest[] }> {
  if (!policy) return { dropped: new Set(), rejected: [] };
  const view = await ingestBackups(ingest, cluster);
  return { dropped: policyDrops(view, policy, now), rejected: view.rejected };
}

/** The keys of `view` (ingest's, see {@link keysPolicyDrops}) that `policy` drops at `now`. */
export function policyDrops(
  view: ClusterBackups,
  policy: RetentionPolicy | undefined,
  now: Date,
): Set<string> {
  if (!policy || view.backups.length === 0) return new Set();
  const plan = planRetention({ backups: view.backups, walFiles: view.walFiles, policy, now });
  return new Set(plan.deletions.map((d) => d.key));
}

/** A cluster's backups and WAL in ingest, as the planner takes them. */
export type IngestBackups = (ingest: Location, cluster: string) => Promise<ClusterBackups>;

const readIngestBackups: IngestBackups = (ingest, cluster) => clusterBackups(ingest, ingest, cluster);

/**
 * {@link IngestBackups} read once for the targets one invocation plans side by side (the daily
 * reconciliation plans every target from one step, each comparing the cluster with ingest's
 * backups): each cluster's manifests are read once, not once per target. Only the last `keep`
 * clusters are held, since a cluster's WAL listing can be large and the targets walk the clusters
 * in the same order; a target that falls further behind reads again.
 */
export function sharedIngestBackups(keep = 4): IngestBackups {
  const reads = new Map<string, Promise<ClusterBackups>>();
  return (ingest, cluster) => {
    let read = reads.get(cluster);
    if (!read) {
      read = readIngestBackups(ingest, cluster);
      // A failed read is not kept: the next target asks again.
      read.catch(() => reads.delete(cluster));
      reads.set(cluster, read);
      for (const oldest of reads.keys()) if (reads.size > keep) reads.delete(oldest);
    }
    return read;
  };
}

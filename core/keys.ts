/**
 * The repository's object key layout (docs/architecture.md, "Object layout"). Every key pgkeep writes is
 * built here and nowhere else, so the agent, the Lambdas and the CDK policies agree on it.
 *
 *   v1/<cluster>/wal/<timeline>/<wal file name>-<sha256 prefix>.zst.age
 *   v1/<cluster>/logical/<db>/<backup-id>/dump.zst.age
 *   v1/<cluster>/logical/_globals/<backup-id>/globals.sql.zst.age
 *   v1/<cluster>/base/<backup-id>/base.tar.zst.age (+ <tablespace oid>.tar.zst.age)
 *   v1/<cluster>/stream/<name>/<backup-id>/stream.zst.age   any command's stdout (`pgkeep stream`)
 *   v1/<cluster>/manifests/<backup-id>.json       written last: the backup exists
 *   verify/<cluster>/<run-id>.json                restore-verification reports: outside every
 *                                                 host's writable prefix, so no host can forge one
 *   pipeline/replication/<target>/cursor.json     how far replication to a target has got, per
 *                                                 cluster (ingest only; pipeline-written, like verify/)
 *   pipeline/replication/<target>/lag.json        per cluster, when replication last listed and the
 *                                                 oldest object it left missing (read by freshness)
 *   v1/<cluster>/system-identifier.json           the PostgreSQL system identifier the cluster name belongs to
 *   v1/<cluster>/wal-gaps/<first>-<last>.json     WAL the host dropped at its backlog limit (wal.onBacklogFull: drop)
 *   v1/<cluster>/wal-bundles/<timeline>/<last>-<first>-<digest>.pgkb
 *                                                 WAL segments bundled by replication, at targets only
 *                                                 (core/wal-bundle.ts)
 */

export const FORMAT_PREFIX = 'v1';
/** Suffix of every encrypted object: zstd inside age. The codec is read back from it. */
export const OBJECT_SUFFIX = '.zst.age';
/** How many hex digits of the plaintext sha256 go into a WAL key. */
export const WAL_HASH_PREFIX_HEX = 16;

const CLUSTER_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;

/** Throws unless `name` can be a cluster name (lower-case letters, digits and dashes, as in a DNS label). */
export function assertClusterName(name: string): void {
  if (!CLUSTER_NAME.test(name)) {
    throw new Error(
      `invalid cluster name "${name}": use 1-63 lower-case letters, digits and dashes, starting with a letter or digit`,
    );
  }
}

export function clusterPrefix(cluster: string): string {
  assertClusterName(cluster);
  return `${FORMAT_PREFIX}/${cluster}/`;
}

/** The cluster a key under `v1/<cluster>/` belongs to; undefined for any other key. */
export function clusterOfKey(key: string): string | undefined {
  const [format, cluster] = key.split('/');
  return format === FORMAT_PREFIX && cluster ? cluster : undefined;
}

/**
 * Database names may hold any character; in keys they are percent-encoded, and a leading "_" is
 * encoded too so that no database can collide with the reserved `_globals` folder.
 */
export function encodeDatabaseName(name: string): string {
  if (name.length === 0) throw new Error('database name is empty');
  return encodeURIComponent(name).replace(/^_/, '%5F').replaceAll('.', '%2E').replaceAll('*', '%2A');
}

export function decodeDatabaseName(encoded: string): string {
  return decodeURIComponent(encoded);
}

const BACKUP_ID = /^(\d{8}T\d{6}Z)-([0-9a-f]{4})$/;

/** A new backup id: sortable by start time (UTC, second precision) with a random suffix against collisions. */
export function newBackupId(now: Date, random: () => number = Math.random): string {
  const stamp = now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}Z$/, 'Z');
  const suffix = Math.floor(random() * 0x10000)
    .toString(16)
    .padStart(4, '0');
  return `${stamp}-${suffix}`;
}

export function isBackupId(id: string): boolean {
  return BACKUP_ID.test(id);
}

/** The time encoded in a backup id. */
export function backupIdTime(id: string): Date {
  const m = BACKUP_ID.exec(id);
  if (!m?.[1]) throw new Error(`invalid backup id "${id}": expected the form 20261122T021500Z-1a2b`);
  const s = m[1];
  return new Date(
    `${s.slice(0, 4)}-${s.slice(4, 6)}-${s.slice(6, 8)}T${s.slice(9, 11)}:${s.slice(11, 13)}:${s.slice(13, 15)}Z`,
  );
}

export function manifestsPrefix(cluster: string): string {
  return `${clusterPrefix(cluster)}manifests/`;
}

export function manifestKey(cluster: string, backupId: string): string {
  return `${manifestsPrefix(cluster)}${backupId}.json`;
}

/** The backup id of a manifest key, or undefined if the key is not a manifest. */
export function backupIdOfManifestKey(key: string): string | undefined {
  const m = /\/manifests\/([^/]+)\.json$/.exec(key);
  return m?.[1] && isBackupId(m[1]) ? m[1] : undefined;
}

export function logicalDumpKey(cluster: string, database: string, backupId: string): string {
  return `${clusterPrefix(cluster)}logical/${encodeDatabaseName(database)}/${backupId}/dump${OBJECT_SUFFIX}`;
}

export function globalsKey(cluster: string, backupId: string): string {
  return `${clusterPrefix(cluster)}logical/_globals/${backupId}/globals.sql${OBJECT_SUFFIX}`;
}

/** `base` for the main data directory, or a tablespace OID. */
export function baseBackupKey(cluster: string, backupId: string, archive: 'base' | number): string {
  return `${clusterPrefix(cluster)}base/${backupId}/${archive}.tar${OBJECT_SUFFIX}`;
}

const STREAM_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;
export const STREAM_NAME_RULE =
  'use 1-100 letters, digits, dots, dashes and underscores, starting with a letter or digit';

/** Whether `name` can name a stream backup (it is a path segment of the key as it stands). */
export function isStreamName(name: string): boolean {
  return STREAM_NAME.test(name);
}

export function streamObjectKey(cluster: string, name: string, backupId: string): string {
  if (!isStreamName(name)) throw new Error(`invalid stream name "${name}": ${STREAM_NAME_RULE}`);
  return `${clusterPrefix(cluster)}stream/${name}/${backupId}/stream${OBJECT_SUFFIX}`;
}

export function walPrefix(cluster: string, timelineHex?: string): string {
  return `${clusterPrefix(cluster)}wal/${timelineHex === undefined ? '' : `${timelineHex}/`}`;
}

/** The folder a WAL file's objects live in: its timeline, the first 8 hex digits of its name. */
export function walFilePrefix(cluster: string, walFileName: string): string {
  return `${walPrefix(cluster, walFileName.slice(0, 8))}${walFileName}-`;
}

export function walKey(cluster: string, walFileName: string, plaintextSha256Hex: string): string {
  return `${walFilePrefix(cluster, walFileName)}${plaintextSha256Hex.slice(0, WAL_HASH_PREFIX_HEX)}${OBJECT_SUFFIX}`;
}

/** Splits a WAL object key into the WAL file name and its plaintext hash prefix. */
export function parseWalKey(key: string): { walFileName: string; hashPrefix: string } | undefined {
  const m = /\/wal\/[0-9A-F]{8}\/([^/]+)-([0-9a-f]{16})\.zst\.age$/.exec(key);
  return m?.[1] && m[2] ? { walFileName: m[1], hashPrefix: m[2] } : undefined;
}

/** Where a cluster's WAL bundles live at a target (core/wal-bundle.ts), all timelines or one. */
export function walBundlesPrefix(cluster: string, timelineHex?: string): string {
  return `${clusterPrefix(cluster)}wal-bundles/${timelineHex === undefined ? '' : `${timelineHex}/`}`;
}

/**
 * A bundle's key: by its last segment first, so one listing after a WAL file name reaches the
 * bundle holding it; `digest` (16 hex digits) is core/wal-bundle.ts `bundleDigest` of its members.
 */
export function walBundleKey(
  cluster: string,
  timeline: string,
  first: string,
  last: string,
  digest: string,
): string {
  return `${walBundlesPrefix(cluster, timeline)}${last}-${first}-${digest}.pgkb`;
}

export interface ParsedBundleKey {
  readonly cluster: string;
  readonly timeline: string;
  readonly first: string;
  readonly last: string;
  readonly digest: string;
}

const BUNDLE_KEY =
  /^v1\/([^/]+)\/wal-bundles\/([0-9A-F]{8})\/([0-9A-F]{24})-([0-9A-F]{24})-([0-9a-f]{16})\.pgkb$/;

/** The parts of a bundle key (first and last segment of its timeline, first <= last), or undefined. */
export function parseWalBundleKey(key: string): ParsedBundleKey | undefined {
  const m = BUNDLE_KEY.exec(key);
  const [, cluster, timeline, last, first, digest] = m ?? [];
  if (!cluster || !timeline || !last || !first || !digest) return undefined;
  if (first > last || !first.startsWith(timeline) || !last.startsWith(timeline)) return undefined;
  return { cluster, timeline, first, last, digest };
}

/** The top-level prefix of every verification report, beside (never under) `v1/`. */
export const VERIFY_REPORT_ROOT = 'verify';

/** Where the verifier writes reports of `cluster`: not under `v1/`, so no host principal may write there. */
export function verifyReportPrefix(cluster: string): string {
  assertClusterName(cluster);
  return `${VERIFY_REPORT_ROOT}/${cluster}/`;
}

export function verifyReportKey(cluster: string, runId: string): string {
  return `${verifyReportPrefix(cluster)}${runId}.json`;
}

/**
 * The object that binds a cluster name to one PostgreSQL system identifier: written once (create
 * only) by the first WAL push, read by every later one, so WAL of another cluster is refused.
 */
export function clusterIdentityKey(cluster: string): string {
  return `${clusterPrefix(cluster)}system-identifier.json`;
}

/** Where the host records WAL it dropped at its backlog limit. */
export function walGapsPrefix(cluster: string): string {
  return `${clusterPrefix(cluster)}wal-gaps/`;
}

/** The record of the dropped segments `first` to `last` (one timeline, inclusive). */
export function walGapKey(cluster: string, first: string, last: string): string {
  return `${walGapsPrefix(cluster)}${first}-${last}.json`;
}

/** Where only the pipeline writes in ingest: outside `v1/`, so no host principal may write there. */
export const PIPELINE_PREFIX = 'pipeline/';

const TARGET_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

function replicationPrefix(target: string): string {
  if (!TARGET_NAME.test(target))
    throw new Error(
      `invalid target name "${target}": use 1-63 letters, digits, dots, dashes and underscores`,
    );
  return `${PIPELINE_PREFIX}replication/${target}/`;
}

/** Replication's cursors for `target`, one entry per cluster (lambdas/replication/cursors.ts). */
export function replicationCursorKey(target: string): string {
  return `${replicationPrefix(target)}cursor.json`;
}

/**
 * How far behind ingest each cluster's copy at `target` is, as replication's last rounds saw it
 * (core/replication-lag.ts); freshness reads it instead of listing.
 */
export function replicationLagKey(target: string): string {
  return `${replicationPrefix(target)}lag.json`;
}

/** A plan too large for a state's payload, handed from a run's first step to its Map. */
export function storedPlanKey(target: string, runId: string): string {
  return `${replicationPrefix(target)}plans/${runId}.json`;
}

/** What the freshness function has seen of `cluster` (core/freshness-state.ts). */
export function freshnessStateKey(cluster: string): string {
  assertClusterName(cluster);
  return `${PIPELINE_PREFIX}freshness/${cluster}.json`;
}

/** The cursors a run proposes for `target`, committed once what they pass over is copied. */
export function pendingCursorKey(target: string, runId: string): string {
  return `${replicationPrefix(target)}pending/${runId}.json`;
}

/**
 * The configuration's error class and its environment variables: what both the loader (config.ts)
 * and the schema (config-schema.ts) need, apart from both so neither imports the other back.
 */

/** Where the agent keeps its state when the config names no spoolDir; the systemd unit's StateDirectory. */
export const DEFAULT_SPOOL_DIR = '/var/lib/pgkeep/spool';

/** A problem with the configuration; the message names the field and the fix. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

export type EnvBinding = { readonly path: readonly string[]; readonly parse: (raw: string) => unknown };
const text = (raw: string) => raw;
const integer = (raw: string) => (/^-?\d+$/.test(raw.trim()) ? Number(raw) : raw);
const decimal = (raw: string) => (/^-?\d+(\.\d+)?$/.test(raw.trim()) ? Number(raw) : raw);
const list = (raw: string) =>
  raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

/** Every option's environment variable. */
export const ENV_BINDINGS: Readonly<Record<string, EnvBinding>> = {
  PGKEEP_CLUSTER: { path: ['cluster'], parse: text },
  PGKEEP_REPOSITORY: { path: ['repository'], parse: text },
  PGKEEP_RECIPIENTS: { path: ['recipients'], parse: list },
  PGKEEP_IDENTITY: { path: ['identityFile'], parse: text },
  PGKEEP_ZSTD_LEVEL: { path: ['zstdLevel'], parse: integer },
  PGKEEP_PG_BIN: { path: ['pgBin'], parse: text },
  PGKEEP_DATABASES: { path: ['databases'], parse: (raw) => (raw.trim() === 'all' ? 'all' : list(raw)) },
  PGKEEP_SPOOL_DIR: { path: ['spoolDir'], parse: text },
  PGKEEP_BACKUP_PARALLELISM: { path: ['backup', 'parallelism'], parse: integer },
  PGKEEP_WAL_PUSH_PARALLELISM: { path: ['wal', 'pushParallelism'], parse: integer },
  PGKEEP_WAL_FETCH_PREFETCH: { path: ['wal', 'fetchPrefetch'], parse: integer },
  PGKEEP_WAL_DIR: { path: ['wal', 'pgWalDir'], parse: text },
  PGKEEP_WAL_RETRY_SECONDS: { path: ['wal', 'retrySeconds'], parse: integer },
  PGKEEP_WAL_ASYNC_SECONDS: { path: ['wal', 'asyncSeconds'], parse: decimal },
  PGKEEP_WAL_MAX_BACKLOG_BYTES: { path: ['wal', 'maxBacklogBytes'], parse: integer },
  PGKEEP_WAL_BACKLOG_WARN_BYTES: { path: ['wal', 'backlogWarnBytes'], parse: integer },
  PGKEEP_WAL_ON_BACKLOG_FULL: { path: ['wal', 'onBacklogFull'], parse: text },
  PGKEEP_SCHEDULE_LOGICAL: { path: ['schedules', 'logical'], parse: text },
  PGKEEP_SCHEDULE_BASE: { path: ['schedules', 'base'], parse: text },
  PGKEEP_METRICS_LISTEN: { path: ['metrics', 'listen'], parse: text },
  PGKEEP_PIPELINE_REPLICATION: { path: ['pipeline', 'replication'], parse: text },
  PGKEEP_PIPELINE_RETENTION: { path: ['pipeline', 'retention'], parse: text },
  PGKEEP_PIPELINE_VERIFICATION: { path: ['pipeline', 'verification'], parse: text },
};

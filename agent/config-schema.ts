/**
 * The configuration's YAML parsing, schema and error messages. Loaded only when a configuration is validated
 * (agent/config.ts), not when a cached validation is reused: zod and yaml are most of a cold
 * `pgkeep wal-push`'s start.
 */
import { Cron } from 'croner';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { DEFAULT_ZSTD_LEVEL, MAX_ZSTD_LEVEL } from '../core/codec.ts';
import { assertClusterName, isStreamName, STREAM_NAME_RULE } from '../core/keys.ts';
import { VerifyAssertionSchema } from '../core/verify-task.ts';
import { ConfigError, DEFAULT_SPOOL_DIR, ENV_BINDINGS } from './config-env.ts';

const cron = z.string().refine(
  (expr) => {
    try {
      new Cron(expr, { paused: true });
      return true;
    } catch {
      return false;
    }
  },
  { message: 'not a valid cron expression (five fields, e.g. "15 * * * *")' },
);

const stateMachineArn = z
  .string()
  .regex(
    /^arn:aws[a-z-]*:states:[a-z0-9-]+:\d{12}:stateMachine:.+$/,
    'not a Step Functions state machine ARN',
  );

export const ConfigSchema = z.strictObject({
  /** Name of this cluster in the repository (`v1/<cluster>/…`). */
  cluster: z.string().superRefine((name, ctx) => {
    try {
      assertClusterName(name);
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: (error as Error).message });
    }
  }),
  /** Where backups go: `s3://bucket/prefix?endpoint=…` or `file:///path`. */
  repository: z.string().min(1),
  /** age recipients (public keys) every object is encrypted to. */
  recipients: z.array(z.string()).default([]),
  /** File with age identities (secret keys); only hosts that restore need one. */
  identityFile: z.string().optional(),
  zstdLevel: z.number().int().min(1).max(MAX_ZSTD_LEVEL).default(DEFAULT_ZSTD_LEVEL),
  /** Directory of the PostgreSQL client and server programs; default: found on PATH. */
  pgBin: z.string().optional(),
  /** Databases the service dumps on its logical schedule; `all` for every database that allows connections. */
  databases: z.union([z.literal('all'), z.array(z.string().min(1))]).default('all'),
  /** State the agent keeps on the host: which WAL segments are already stored, prefetched WAL. */
  spoolDir: z.string().default(DEFAULT_SPOOL_DIR),
  backup: z
    .strictObject({
      /**
       * Databases a logical backup dumps at once. Each dump is a pg_dump, a zstd and the agent's
       * encryption: about two busy cores. 2 hides one dump's waits behind the other's and gains
       * most on many small databases, without taking every core of a small primary.
       */
      parallelism: z.number().int().min(1).max(32).default(2),
    })
    .prefault({}),
  wal: z
    .strictObject({
      /** Segments the service pushes at once. */
      pushParallelism: z.number().int().min(1).max(64).default(4),
      /** Segments wal-fetch downloads ahead during recovery. */
      fetchPrefetch: z.number().int().min(0).max(64).default(8),
      /** pg_wal of the cluster the service watches; default: <PGDATA>/pg_wal. */
      pgWalDir: z.string().optional(),
      /** How long wal-push/wal-fetch retry a repository that is unreachable before failing. */
      retrySeconds: z.number().min(0).max(3600).default(30),
      /**
       * Without the service, wal-push starts a transient pusher that pushes the following ready
       * segments ahead and exits after this long with nothing to push; 0 turns it off.
       */
      asyncSeconds: z.number().min(0).max(86_400).default(60),
      /**
       * The most WAL (bytes of segments PostgreSQL marked ready but not yet archived) pg_wal may
       * hold for an unreachable repository; 0 is no limit. What happens at it: onBacklogFull.
       */
      maxBacklogBytes: z.number().int().min(0).default(0),
      /** A warning (log line and metric) once the backlog passes this; default half of maxBacklogBytes. */
      backlogWarnBytes: z.number().int().min(0).optional(),
      /**
       * At maxBacklogBytes: `fail` keeps failing archive_command (pg_wal keeps growing); `drop`
       * gives up the oldest WAL (archive_command succeeds without storing it) and records the gap.
       */
      onBacklogFull: z.enum(['fail', 'drop']).default('fail'),
    })
    .prefault({}),
  schedules: z
    .strictObject({
      logical: cron.optional(),
      base: cron.optional(),
    })
    .prefault({}),
  /** Other repositories holding copies (replication targets), by name: `pgkeep verify --from NAME`. */
  targets: z.record(z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/), z.string().min(1)).default({}),
  verify: z
    .strictObject({
      /** SQL checks `pgkeep verify` runs on the restored data; each query's first value must equal `expected`. */
      assertions: z.array(VerifyAssertionSchema).default([]),
      /** Stream backups whose plaintext `pgkeep verify` also restores into a command, by name. */
      streams: z
        .record(
          z.string().refine(isStreamName, STREAM_NAME_RULE),
          z.strictObject({ restoreCommand: z.string().min(1) }),
        )
        .default({}),
    })
    .prefault({}),
  /** The cloud pipeline's state machines (stack outputs *StateMachineArn), for `pgkeep pipeline`. */
  pipeline: z
    .strictObject({
      replication: stateMachineArn.optional(),
      retention: stateMachineArn.optional(),
      verification: stateMachineArn.optional(),
    })
    .prefault({}),
  metrics: z
    .strictObject({
      /** host:port of the Prometheus endpoint; loopback only unless you mean otherwise. */
      listen: z.string().default('127.0.0.1:9187'),
    })
    .prefault({}),
});

export type AgentConfig = z.infer<typeof ConfigSchema>;

/** The options in a config file's text, or a {@link ConfigError} saying why there are none. */
export function parseConfigText(content: string, path: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = parseYaml(content);
  } catch (error) {
    throw new ConfigError(`config file ${path} is not valid YAML: ${(error as Error).message}`, {
      cause: error,
    });
  }
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new ConfigError(`config ${path}: expected a mapping of options at the top level`);
  }
  return parsed as Record<string, unknown>;
}

/** Validates `raw` (file and environment merged), or throws a {@link ConfigError} naming the field. */
export function validateConfig(
  raw: unknown,
  source: string,
  /** The PGKEEP_* variables that were set: a bad value is theirs, not the file's. */
  envOverrides: readonly string[] = [],
): AgentConfig {
  const result = ConfigSchema.safeParse(raw);
  if (!result.success) {
    const issue = result.error.issues[0];
    const env = issue && envNameOf(issue.path.slice(0, 2));
    const blamed = env && envOverrides.includes(env) ? `${env} in the environment` : source;
    throw new ConfigError(describeIssue(issue, blamed));
  }
  return result.data;
}

function envNameOf(path: readonly PropertyKey[]): string | undefined {
  const joined = path.join('.');
  return Object.entries(ENV_BINDINGS).find(([, b]) => b.path.join('.') === joined)?.[0];
}

function describeIssue(issue: z.core.$ZodIssue | undefined, source: string): string {
  if (!issue) return `config (${source}) is invalid`;
  const field = issue.path.join('.') || '(top level)';
  if (issue.code === 'unrecognized_keys') {
    const where = issue.path.length ? ` in ${field}` : '';
    return `config (${source}): unknown option ${issue.keys.map((k) => `"${k}"`).join(', ')}${where}; known options: ${knownKeys(issue.path).join(', ')}`;
  }
  const env = envNameOf(issue.path);
  const hint = env ? ` (or set ${env})` : '';
  if (issue.code === 'invalid_type' && /received undefined/.test(issue.message)) {
    const file = / no config file at (.*)$/.exec(source)?.[1];
    if (file) {
      return `config file ${file} does not exist, and ${field} is not in the environment either: create the file (see pgkeep.example.yaml), pass --config FILE${hint}`;
    }
    return `config (${source}): ${field} is required: set it in the config file${hint}`;
  }
  return `config (${source}): ${field}: ${issue.message}${hint}`;
}

function knownKeys(path: readonly PropertyKey[]): string[] {
  let schema: z.ZodType = ConfigSchema;
  for (const key of path) {
    const inner = unwrap(schema);
    if (!(inner instanceof z.ZodObject)) return [];
    schema = inner.shape[key as string] as z.ZodType;
  }
  const inner = unwrap(schema);
  return inner instanceof z.ZodObject ? Object.keys(inner.shape) : [];
}

function unwrap(schema: z.ZodType): z.ZodType {
  let s: z.ZodType = schema;
  while ('unwrap' in s && typeof s.unwrap === 'function') s = s.unwrap() as z.ZodType;
  return s;
}

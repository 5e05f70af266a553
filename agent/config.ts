/**
 * The agent's configuration: one YAML file (`--config`, `PGKEEP_CONFIG`, default
 * /etc/pgkeep/pgkeep.yaml) with every option also settable by an environment variable, which
 * wins. PostgreSQL is reached through the libpq variables (PGHOST, PGPORT, PGUSER, ...) and S3
 * through the AWS SDK's credential chain, so neither kind of secret ever appears here or in argv.
 * The commented example is pgkeep.example.yaml at the repository root.
 */
import { readFile } from 'node:fs/promises';
import { Cron } from 'croner';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { assertRecipients } from '../core/age-stream.ts';
import { DEFAULT_ZSTD_LEVEL, MAX_ZSTD_LEVEL } from '../core/codec.ts';
import { assertClusterName } from '../core/keys.ts';

export const DEFAULT_CONFIG_PATH = '/etc/pgkeep/pgkeep.yaml';

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

const ConfigSchema = z.strictObject({
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
  spoolDir: z.string().default('/var/lib/pgkeep/spool'),
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
    })
    .prefault({}),
  schedules: z
    .strictObject({
      logical: cron.optional(),
      base: cron.optional(),
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

/** A problem with the configuration; the message names the field and the fix. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

type EnvBinding = { readonly path: readonly string[]; readonly parse: (raw: string) => unknown };
const text = (raw: string) => raw;
const integer = (raw: string) => (/^-?\d+$/.test(raw.trim()) ? Number(raw) : raw);
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
  PGKEEP_WAL_PUSH_PARALLELISM: { path: ['wal', 'pushParallelism'], parse: integer },
  PGKEEP_WAL_FETCH_PREFETCH: { path: ['wal', 'fetchPrefetch'], parse: integer },
  PGKEEP_WAL_DIR: { path: ['wal', 'pgWalDir'], parse: text },
  PGKEEP_WAL_RETRY_SECONDS: { path: ['wal', 'retrySeconds'], parse: integer },
  PGKEEP_SCHEDULE_LOGICAL: { path: ['schedules', 'logical'], parse: text },
  PGKEEP_SCHEDULE_BASE: { path: ['schedules', 'base'], parse: text },
  PGKEEP_METRICS_LISTEN: { path: ['metrics', 'listen'], parse: text },
};

export interface LoadConfigOptions {
  /** `--config`; takes precedence over PGKEEP_CONFIG. */
  readonly configPath?: string | undefined;
  readonly env: NodeJS.ProcessEnv;
}

/**
 * Reads the file (if any), applies environment overrides and validates. A file named explicitly
 * must exist; the default path may be absent when the environment carries the configuration.
 */
export async function loadConfig(options: LoadConfigOptions): Promise<AgentConfig> {
  const explicit = options.configPath ?? options.env.PGKEEP_CONFIG;
  const path = explicit ?? DEFAULT_CONFIG_PATH;
  let raw: Record<string, unknown> = {};
  let source = 'environment';
  try {
    const content = await readFile(path, 'utf8');
    source = path;
    const parsed: unknown = parseYaml(content);
    if (parsed !== null && parsed !== undefined) {
      if (typeof parsed !== 'object' || Array.isArray(parsed)) {
        throw new ConfigError(`config ${path}: expected a mapping of options at the top level`);
      }
      raw = parsed as Record<string, unknown>;
    }
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && explicit === undefined) {
      // No file at the default path: the environment may carry everything.
    } else if (code === 'ENOENT') {
      throw new ConfigError(
        `config file ${path} does not exist: create it (see pgkeep.example.yaml) or fix the path`,
      );
    } else if (code === 'EACCES') {
      throw new ConfigError(`config file ${path} is not readable by this user: fix its permissions`);
    } else {
      throw new ConfigError(`config file ${path} is not valid YAML: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }

  for (const [name, binding] of Object.entries(ENV_BINDINGS)) {
    const value = options.env[name];
    if (value === undefined || value === '') continue;
    setPath(raw, binding.path, binding.parse(value));
  }

  const result = ConfigSchema.safeParse(raw);
  if (!result.success) throw new ConfigError(describeIssue(result.error.issues[0], source));
  return result.data;
}

/** Refuses to run without a recipient, naming how to get one. */
export function requireRecipients(config: AgentConfig): readonly string[] {
  try {
    assertRecipients(config.recipients);
  } catch (error) {
    throw new ConfigError((error as Error).message);
  }
  return config.recipients;
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

function setPath(target: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    const next = node[key];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[path[path.length - 1] as string] = value;
}

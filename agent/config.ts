/**
 * The agent's configuration: one YAML file (`--config`, `PGKEEP_CONFIG`, default
 * /etc/pgkeep/pgkeep.yaml) with every option also settable by an environment variable, which
 * wins. PostgreSQL is reached through the libpq variables (PGHOST, PGPORT, PGUSER, ...) and S3
 * through the AWS SDK's credential chain, so neither kind of secret ever appears here or in argv.
 * The commented example is pgkeep.example.yaml at the repository root.
 */
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { assertRecipients } from '../core/age-stream.ts';
import type { AgentConfig } from './config-schema.ts';
import { AGENT_VERSION } from './version.ts';

export type { AgentConfig };

export const DEFAULT_CONFIG_PATH = '/etc/pgkeep/pgkeep.yaml';

/** A problem with the configuration; the message names the field and the fix. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

type EnvBinding = { readonly path: readonly string[]; readonly parse: (raw: string) => unknown };
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
  PGKEEP_WAL_PUSH_PARALLELISM: { path: ['wal', 'pushParallelism'], parse: integer },
  PGKEEP_WAL_FETCH_PREFETCH: { path: ['wal', 'fetchPrefetch'], parse: integer },
  PGKEEP_WAL_DIR: { path: ['wal', 'pgWalDir'], parse: text },
  PGKEEP_WAL_RETRY_SECONDS: { path: ['wal', 'retrySeconds'], parse: integer },
  PGKEEP_WAL_ASYNC_SECONDS: { path: ['wal', 'asyncSeconds'], parse: decimal },
  PGKEEP_SCHEDULE_LOGICAL: { path: ['schedules', 'logical'], parse: text },
  PGKEEP_SCHEDULE_BASE: { path: ['schedules', 'base'], parse: text },
  PGKEEP_METRICS_LISTEN: { path: ['metrics', 'listen'], parse: text },
  PGKEEP_PIPELINE_REPLICATION: { path: ['pipeline', 'replication'], parse: text },
  PGKEEP_PIPELINE_RETENTION: { path: ['pipeline', 'retention'], parse: text },
  PGKEEP_PIPELINE_VERIFICATION: { path: ['pipeline', 'verification'], parse: text },
};

export interface LoadConfigOptions {
  /** `--config`; takes precedence over PGKEEP_CONFIG. */
  readonly configPath?: string | undefined;
  readonly env: NodeJS.ProcessEnv;
}

/**
 * Reads the file (if any), applies environment overrides and validates. A file named explicitly
 * must exist; the default path may be absent when the environment carries the configuration.
 *
 * When PGKEEP_SPOOL_DIR is set (the archive_command and restore_command lines pgkeep writes set
 * it), a validated configuration is kept in the spool and reused while the file's content, the
 * PGKEEP_* variables and the program are unchanged: validating loads zod and yaml, ~45 ms of every
 * `pgkeep wal-push` otherwise. The spool is private to the service's user (0700).
 */
export async function loadConfig(options: LoadConfigOptions): Promise<AgentConfig> {
  const explicit = options.configPath ?? options.env.PGKEEP_CONFIG;
  const path = explicit ?? DEFAULT_CONFIG_PATH;
  const content = await readConfigFile(path, explicit !== undefined);
  const overrides = Object.keys(ENV_BINDINGS)
    .map((name) => [name, options.env[name]] as const)
    .filter(([, value]) => value !== undefined && value !== '');
  const cache = validationCache(options.env.PGKEEP_SPOOL_DIR, path, content, overrides);
  const cached = await cache?.read();
  if (cached) return cached;

  const { parseConfigText, validateConfig } = await import('./config-schema.ts');
  const raw = content === undefined ? {} : parseConfigText(content, path);
  for (const [name, value] of overrides) {
    const binding = ENV_BINDINGS[name] as EnvBinding;
    setPath(raw, binding.path, binding.parse(value as string));
  }
  const config = validateConfig(raw, content === undefined ? 'environment' : path);
  await cache?.write(config);
  return config;
}

/** The file's text; undefined when the default path is absent (the environment may carry everything). */
async function readConfigFile(path: string, explicit: boolean): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !explicit) return undefined;
    if (code === 'ENOENT') {
      throw new ConfigError(
        `config file ${path} does not exist: create it (see pgkeep.example.yaml) or fix the path`,
      );
    }
    if (code === 'EACCES') {
      throw new ConfigError(`config file ${path} is not readable by this user: fix its permissions`);
    }
    throw new ConfigError(`config file ${path} cannot be read: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

/** Bump when the cached form changes meaning. */
const CACHE_FORMAT = 2;

/**
 * One cached validation per config path, under `<spoolDir>/config-cache/`, valid for exactly the
 * inputs it came from. Only ever a cache: any failure to read or write it falls back to validating.
 */
function validationCache(
  spoolDir: string | undefined,
  path: string,
  content: string | undefined,
  overrides: readonly (readonly [string, string | undefined])[],
) {
  if (!spoolDir) return undefined;
  let program = '';
  try {
    // A new pgkeep may validate differently (new options, new defaults).
    program = process.argv[1] ? String(statSync(process.argv[1]).mtimeMs) : '';
  } catch {}
  const key = createHash('sha256')
    .update(JSON.stringify([CACHE_FORMAT, AGENT_VERSION, program, path, content ?? null, overrides]))
    .digest('hex');
  const dir = join(spoolDir, 'config-cache');
  const file = join(dir, `${createHash('sha256').update(path).digest('hex').slice(0, 16)}.json`);
  return {
    async read(): Promise<AgentConfig | undefined> {
      try {
        const entry = JSON.parse(await readFile(file, 'utf8')) as { key: string; config: AgentConfig };
        return entry.key === key ? entry.config : undefined;
      } catch {
        return undefined;
      }
    },
    async write(config: AgentConfig): Promise<void> {
      const tmp = `${file}.${process.pid}.tmp`;
      try {
        await mkdir(dir, { recursive: true, mode: 0o700 });
        await writeFile(tmp, JSON.stringify({ key, config }), { mode: 0o600 });
        await rename(tmp, file);
      } catch {
        await rm(tmp, { force: true }).catch(() => undefined);
      }
    },
  };
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

function setPath(target: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    const next = node[key];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[path[path.length - 1] as string] = value;
}

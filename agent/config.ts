/**
 * The agent's configuration: one YAML file (`--config`, `PGKEEP_CONFIG`, default
 * /etc/pgkeep/pgkeep.yaml) with every option also settable by an environment variable, which
 * wins. PostgreSQL is reached through the libpq variables (PGHOST, PGPORT, PGUSER, ...) and S3
 * through the AWS SDK's credential chain, so neither kind of secret ever appears here or in argv.
 * The commented example is pgkeep.example.yaml at the repository root.
 */
import { createHash } from 'node:crypto';
import { type Stats, statSync } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { assertRecipients } from '../core/age-stream.ts';
import { recipientPayload, rememberRecipientPayload } from '../core/recipient-payload.ts';
import { ConfigError, ENV_BINDINGS, type EnvBinding } from './config-env.ts';
import type { AgentConfig } from './config-schema.ts';
import { AGENT_VERSION } from './version.ts';

export type { AgentConfig };

export const DEFAULT_CONFIG_PATH = '/etc/pgkeep/pgkeep.yaml';
export { ConfigError, DEFAULT_SPOOL_DIR, ENV_BINDINGS } from './config-env.ts';

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
  // Without a file every option came from the environment: say that the file is missing rather
  // than only that an option is.
  const source = content === undefined ? `environment; no config file at ${path}` : path;
  const config = validateConfig(
    raw,
    source,
    overrides.map(([name]) => name),
  );
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
const CACHE_FORMAT = 3;

/**
 * One cached validation per config path, under `<spoolDir>/config-cache/`, valid for exactly the
 * inputs it came from, with the recipients' decoded keys (core/recipient-payload.ts). Only ever a
 * cache: any failure to read or write it falls back to validating. Whoever can write it chooses
 * the keys every object is encrypted to, so an entry is read only from a file and directory that
 * belong to this user and that no other user can write.
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
        const handle = await open(file, 'r');
        let text: string;
        try {
          if (!ownPrivate(await handle.stat()) || !ownPrivate(await stat(dir))) return undefined;
          text = await handle.readFile('utf8');
        } finally {
          await handle.close();
        }
        const entry = JSON.parse(text) as CacheEntry;
        if (entry.key !== key) return undefined;
        entry.config.recipients.forEach((r, i) => {
          const payload = entry.recipientPayloads?.[i];
          if (payload) rememberRecipientPayload(r, payload);
        });
        return entry.config;
      } catch {
        return undefined;
      }
    },
    async write(config: AgentConfig): Promise<void> {
      const tmp = `${file}.${process.pid}.tmp`;
      try {
        await mkdir(dir, { recursive: true, mode: 0o700 });
        const entry: CacheEntry = { key, config, recipientPayloads: recipientPayloadsOf(config) };
        await writeFile(tmp, JSON.stringify(entry), { mode: 0o600 });
        await rename(tmp, file);
      } catch {
        await rm(tmp, { force: true }).catch(() => undefined);
      }
    },
  };
}

interface CacheEntry {
  readonly key: string;
  readonly config: AgentConfig;
  /** Each of `config.recipients` decoded, in order; absent when one is invalid. */
  readonly recipientPayloads?: readonly string[];
}

function recipientPayloadsOf(config: AgentConfig): readonly string[] | undefined {
  try {
    return config.recipients.map(recipientPayload);
  } catch {
    // An invalid recipient fails where it is used (requireRecipients), with its message.
    return undefined;
  }
}

/** This user's, and writable by no one else (neither group nor others). */
function ownPrivate(info: Stats): boolean {
  return info.uid === process.getuid?.() && (info.mode & 0o022) === 0;
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

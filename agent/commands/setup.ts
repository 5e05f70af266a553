/** What most commands start from: the configuration, the repository, the PostgreSQL environment. */
import { openStorage } from '../../storage/open-storage.ts';
import type { Storage } from '../../storage/storage.ts';
import { type AgentConfig, ConfigError, loadConfig } from '../config.ts';
import type { PgEnv } from '../postgres.ts';
import type { CommandContext } from './command.ts';

export interface Setup {
  readonly config: AgentConfig;
  readonly storage: Storage;
  readonly pg: PgEnv;
}

export interface SetUpOptions {
  /**
   * The command reads WAL, possibly from a replication target's copy: the repository is read through
   * the WAL bundle reader (storage/wal-bundles.ts), so bundled segments are found like single ones.
   * Off for commands that write WAL, whose listings would pay for a bundle lookup they never need.
   * @default false
   */
  readonly readsWal?: boolean;
  /** With `readsWal`: a bundled segment's read also reads the next ones of its bundle, up to this many bytes (the prefetcher). @default 0 */
  readonly walReadAheadBytes?: number;
  /**
   * `--from`: read another repository than the configured one, a target's name from the config or
   * a URL ({@link resolveRepository}). @default - the configured repository (ingest)
   */
  readonly from?: string;
}

export async function setUp(context: CommandContext, options: SetUpOptions = {}): Promise<Setup> {
  const config = await loadConfig({ configPath: context.configPath, env: context.env });
  let storage: Storage;
  const url = options.from === undefined ? config.repository : resolveRepository(config, options.from).url;
  try {
    storage = openStorage(url);
  } catch (error) {
    throw new ConfigError(`repository: ${(error as Error).message} (or set PGKEEP_REPOSITORY)`, {
      cause: error,
    });
  }
  // Loaded on demand: wal-push, started once per segment, never pays for the module.
  if (options.readsWal)
    storage = (await import('../../storage/wal-bundles.ts')).withWalBundles(storage, {
      readAheadBytes: options.walReadAheadBytes ?? 0,
    });
  return { config, storage, pg: { pgBin: config.pgBin, env: context.env } };
}

/** Draws progress on a TTY, at most a few times a second; silent otherwise. */
export function progressLine(context: CommandContext): { update(text: string): void; done(): void } {
  let last = 0;
  let drawn = false;
  return {
    update(text) {
      if (!context.interactive) return;
      const now = Date.now();
      if (now - last < 200) return;
      last = now;
      drawn = true;
      context.stderr.write(`\r\x1b[2K${text}`);
    },
    done() {
      if (drawn) context.stderr.write('\r\x1b[2K');
      drawn = false;
    },
  };
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

/** `--from`/`--report-to`: a target's name from the config, or a repository URL. */
export function resolveRepository(
  config: AgentConfig,
  value: string | undefined,
): { name: string; url: string } {
  if (value === undefined || value === 'ingest') return { name: 'ingest', url: config.repository };
  const target = config.targets[value];
  if (target) return { name: value, url: target };
  if (value.includes('://')) {
    if (value === config.repository) return { name: 'ingest', url: value };
    const named = Object.entries(config.targets).find(([, url]) => url === value)?.[0];
    return { name: named ?? openStorage(value).displayUrl, url: value };
  }
  const known = Object.keys(config.targets).join(', ') || 'none configured';
  throw new ConfigError(
    `unknown target "${value}": give a repository URL (s3://… or file://…) or a name under targets in the config; known targets: ${known}`,
  );
}

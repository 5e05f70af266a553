import { agent } from './agent.ts';
import { backup } from './backup.ts';
import { basebackup } from './basebackup.ts';
import { check } from './check.ts';
import type { Command } from './command.ts';
import { keygen } from './keygen.ts';
import { list } from './list.ts';
import { restore } from './restore.ts';
import { systemdUnit } from './systemd-unit.ts';
import { walFetch, walPrefetch } from './wal-fetch.ts';
import { walPush } from './wal-push.ts';

/** Every command of the CLI, by name, in the order `pgkeep help` lists them. */
export const COMMANDS: Readonly<Record<string, Command>> = {
  keygen,
  backup,
  list,
  restore,
  check,
  basebackup,
  'wal-push': walPush,
  'wal-fetch': walFetch,
  'wal-prefetch': walPrefetch,
  agent,
  'systemd-unit': systemdUnit,
};

import { backup } from './backup.ts';
import { check } from './check.ts';
import type { Command } from './command.ts';
import { keygen } from './keygen.ts';
import { list } from './list.ts';
import { restore } from './restore.ts';

/** Every command of the CLI, by name, in the order `pgkeep help` lists them. */
export const COMMANDS: Readonly<Record<string, Command>> = {
  keygen,
  backup,
  list,
  restore,
  check,
};

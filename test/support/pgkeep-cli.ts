/** Runs the bundled agent (dist/pgkeep.mjs) as a user would: a separate process, Node 24. */
import { type ChildProcess, spawn } from 'node:child_process';
import { resolve } from 'node:path';
import { livePidFileHolder } from '../../agent/pid-lock.ts';
import { WalSpool } from '../../agent/wal/spool.ts';

export const PROJECT_ROOT = resolve(import.meta.dirname, '../..');
/** The project's own Node 24 (the "node" devDependency), whatever `node` is on PATH. */
export const NODE = resolve(PROJECT_ROOT, 'node_modules/.bin/node');
export const PGKEEP_BUNDLE = resolve(PROJECT_ROOT, 'dist/pgkeep.mjs');

export interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Starts `pgkeep ARGS` with exactly `env` (plus PATH) and returns the child and its result. */
export function startPgkeep(
  args: readonly string[],
  env: Record<string, string>,
  cwd?: string,
): { child: ChildProcess; result: Promise<CliResult> } {
  const child = spawn(NODE, [PGKEEP_BUNDLE, ...args], {
    ...(cwd ? { cwd } : {}),
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return { child, result: outputOf(child) };
}

/** What a child started with piped stdout and stderr printed, once it has exited. */
export function outputOf(child: ChildProcess): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  return new Promise<CliResult>((resolvePromise, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolvePromise({ code, signal, stdout, stderr }));
  });
}

export async function runPgkeep(
  args: readonly string[],
  env: Record<string, string>,
  cwd?: string,
): Promise<CliResult> {
  return await startPgkeep(args, env, cwd).result;
}

/**
 * Stops the transient WAL pusher that `wal-push` starts when no service runs (wal.asyncSeconds),
 * by the pid in the data directory's spool, and waits for it to go (it lets a push in flight finish).
 */
export async function stopWalPusher(spoolDir: string, cluster: string, dataDir: string): Promise<void> {
  const pidFile = new WalSpool(spoolDir, cluster, dataDir).agentPidFile;
  const pid = await livePidFileHolder(pidFile);
  if (pid === undefined) return;
  process.kill(pid, 'SIGTERM');
  for (let waited = 0; waited < 10_000 && (await livePidFileHolder(pidFile)) === pid; waited += 50) {
    await new Promise((resolveWait) => setTimeout(resolveWait, 50));
  }
}

export interface BinaryResult {
  readonly code: number | null;
  readonly stdout: Buffer;
  readonly stderr: string;
}

/** Runs `program ARGS` with exactly `env` and keeps stdout as bytes (decrypted WAL, dumps). */
export async function runForBytes(
  program: string,
  args: readonly string[],
  env: Record<string, string>,
): Promise<BinaryResult> {
  const child = spawn(program, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const stdout: Buffer[] = [];
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => stdout.push(d));
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  return await new Promise<BinaryResult>((resolvePromise, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolvePromise({ code, stdout: Buffer.concat(stdout), stderr }));
  });
}

/** Shared helpers of the verify tests: copying a repository (a provider's copy), and leftovers. */
import { execFile } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { promisify } from 'node:util';
import type { Storage } from '../../../storage/storage.ts';

const execFileAsync = promisify(execFile);

/** Copies every object under `prefix` from one repository to another, changing bodies with `edit`. */
export async function copyRepository(
  from: Storage,
  to: Storage,
  prefix: string,
  edit: (key: string, body: Buffer) => Buffer | undefined = (_, body) => body,
): Promise<void> {
  for await (const info of from.list(prefix)) {
    const body = edit(info.key, await buffer(await from.get(info.key)));
    if (body) await to.put(info.key, Readable.from([body]));
  }
}

/** Flips one bit in the middle of `body`. */
export function flipByte(body: Buffer): Buffer {
  const copy = Buffer.from(body);
  const at = Math.floor(copy.length / 2);
  copy[at] = (copy[at] as number) ^ 0x01;
  return copy;
}

/** What a verification may leave behind: entries in its work dir, and postgres processes on it. */
export async function leftovers(workDir: string): Promise<string[]> {
  const entries = await readdir(workDir).catch(() => [] as string[]);
  const { stdout } = await execFileAsync('ps', ['-eo', 'pid,args']);
  // Anything running on a path inside the work dir (a server's -D); the verify command itself
  // names only the work dir.
  const processes = stdout.split('\n').filter((line) => line.includes(`${workDir}/`));
  return [...entries.map((e) => `file ${e}`), ...processes.map((p) => `process ${p.trim()}`)];
}

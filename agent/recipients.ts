import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { ConfigError } from './config.ts';

/** A short, stable, non-secret name for a recipient, recorded in manifests. */
export function recipientFingerprint(recipient: string): string {
  return createHash('sha256').update(recipient).digest('hex').slice(0, 16);
}

/**
 * Reads age identities (`AGE-SECRET-KEY-PQ-1…`, `AGE-SECRET-KEY-1…`) from a file in age's own
 * format: one per line, `#` comments. The file must not be readable by group or others.
 */
export async function readIdentityFile(path: string | undefined): Promise<string[]> {
  if (!path) {
    throw new ConfigError(
      'no identity configured: reading backups needs the identity file (set identityFile in the config or PGKEEP_IDENTITY)',
    );
  }
  let content: string;
  try {
    const info = await stat(path);
    if ((info.mode & 0o077) !== 0) {
      throw new ConfigError(`identity file ${path} is readable by other users: run chmod 600 ${path}`);
    }
    content = await readFile(path, 'utf8');
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    throw new ConfigError(
      `cannot read identity file ${path}: ${(error as NodeJS.ErrnoException).code ?? error}`,
    );
  }
  const identities = content
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line.startsWith('AGE-SECRET-KEY-'));
  if (identities.length === 0) {
    throw new ConfigError(
      `identity file ${path} holds no AGE-SECRET-KEY line: is it the file pgkeep keygen wrote?`,
    );
  }
  return identities;
}

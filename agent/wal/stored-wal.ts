/** What the repository holds of a WAL file name: its stored versions, and a read-back check. */
import { createHash } from 'node:crypto';
import { parseWalKey, walFilePrefix } from '../../core/keys.ts';
import type { Storage } from '../../storage/storage.ts';
import { type RetryPolicy, withRetry } from './retry.ts';

/** The stored versions (hash prefixes) of a WAL file name. */
export async function storedWalVersions(
  storage: Storage,
  cluster: string,
  walFileName: string,
): Promise<{ key: string; hashPrefix: string; sizeBytes: number }[]> {
  const versions: { key: string; hashPrefix: string; sizeBytes: number }[] = [];
  for await (const info of storage.list(walFilePrefix(cluster, walFileName))) {
    const parsed = parseWalKey(info.key);
    if (parsed?.walFileName === walFileName) {
      versions.push({ key: info.key, hashPrefix: parsed.hashPrefix, sizeBytes: info.sizeBytes });
    }
  }
  return versions;
}

/** Reads `key` back and checks its size and sha256 against what was written. */
export async function verifyStored(
  storage: Storage,
  key: string,
  sizeBytes: number,
  sha256: string,
  retry: RetryPolicy,
): Promise<void> {
  await withRetry(`reading back ${key}`, retry, async () => {
    const hash = createHash('sha256');
    let size = 0;
    for await (const chunk of await storage.get(key)) {
      hash.update(chunk as Buffer);
      size += (chunk as Buffer).length;
    }
    const digest = hash.digest('hex');
    if (size !== sizeBytes || digest !== sha256) {
      throw new Error(
        `${key} reads back as ${size} bytes with sha256 ${digest}, but ${sizeBytes} bytes with sha256 ${sha256} ` +
          `were written: ${storage.displayUrl} did not store the object intact`,
      );
    }
  });
}

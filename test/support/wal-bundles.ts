/** Builds WAL bundles in memory for tests, with the format's own functions (core/wal-bundle.ts). */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { parseWalKey } from '../../core/keys.ts';
import { bundleKeyOf, bundleTail, encodeBundleIndex } from '../../core/wal-bundle.ts';
import type { Storage } from '../../storage/storage.ts';

/** The bundle key and bytes holding `members` (ingest keys with their ciphertext), in key order. */
export function bundleOf(
  cluster: string,
  members: readonly { key: string; bytes: Buffer }[],
): { key: string; body: Buffer } {
  const sorted = [...members].sort((a, b) => (a.key < b.key ? -1 : 1));
  const names = sorted.map((m) => parseWalKey(m.key)?.walFileName as string);
  const { index, members: placed } = encodeBundleIndex(
    sorted.map((m) => ({
      key: m.key,
      length: m.bytes.length,
      sha256: createHash('sha256').update(m.bytes).digest('hex'),
    })),
  );
  const first = names[0] as string;
  const last = names[names.length - 1] as string;
  const body = Buffer.concat([
    ...sorted.map((m) => m.bytes),
    bundleTail(
      index,
      sorted.reduce((n, m) => n + m.bytes.length, 0),
    ),
  ]);
  return { key: bundleKeyOf(cluster, first.slice(0, 8), first, last, placed), body };
}

/** Stores the bundle of `members` in `storage`; returns its key. */
export async function putBundle(
  storage: Storage,
  cluster: string,
  members: readonly { key: string; bytes: Buffer }[],
): Promise<string> {
  const { key, body } = bundleOf(cluster, members);
  await storage.put(key, Readable.from([body]));
  return key;
}

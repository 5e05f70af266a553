/**
 * Key, prefix and range rules shared by every driver, so that a key one driver accepts is accepted
 * by all of them and maps to the same place (a key is also a path under a `file://` root).
 */
import type { ByteRange } from './storage.ts';

/** Names a driver may use for its own in-flight files; no key segment may start with it. */
export const TEMP_NAME_PREFIX = '.pgkeep-tmp-';

function segmentProblem(segment: string): string | undefined {
  if (segment === '') return 'has an empty segment (leading, trailing or double "/")';
  if (segment === '.' || segment === '..') return `has a "${segment}" segment`;
  if (segment.startsWith(TEMP_NAME_PREFIX))
    return `has a segment starting with "${TEMP_NAME_PREFIX}", reserved for temp files`;
  return undefined;
}

/** Throws unless `key` is a repository-relative object key such as `v1/main/wal/…`. */
export function assertObjectKey(key: string): void {
  if (typeof key !== 'string' || key.length === 0)
    throw new TypeError('invalid object key "": a key must not be empty');
  if (key.includes('\0'))
    throw new TypeError(`invalid object key ${JSON.stringify(key)}: it contains a NUL byte`);
  for (const segment of key.split('/')) {
    const problem = segmentProblem(segment);
    if (problem) {
      throw new TypeError(
        `invalid object key ${JSON.stringify(key)}: it ${problem}; keys are relative paths like "v1/<cluster>/wal/…"`,
      );
    }
  }
}

/**
 * Throws unless `prefix` is a listing prefix: empty, or a key's beginning (it may end inside a
 * segment, as in `v1/main/wal/00000001/0000000100`, or with "/").
 */
export function assertListPrefix(prefix: string): void {
  if (prefix === '') return;
  if (prefix.includes('\0'))
    throw new TypeError(`invalid list prefix ${JSON.stringify(prefix)}: it contains a NUL byte`);
  const segments = prefix.split('/');
  // The last segment may be partial or empty (prefix ends with "/").
  const complete = segments.slice(0, -1);
  for (const segment of complete) {
    const problem = segmentProblem(segment);
    if (problem) throw new TypeError(`invalid list prefix ${JSON.stringify(prefix)}: it ${problem}`);
  }
}

/** Throws unless `range` is a valid inclusive byte range. */
export function assertByteRange(range: ByteRange): void {
  const { start, end } = range;
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) {
    throw new RangeError(
      `invalid byte range ${JSON.stringify(range)}: start and end are inclusive byte offsets with 0 <= start <= end`,
    );
  }
}

/** Ascending key order as S3 defines it: by the keys' UTF-8 bytes (not JavaScript's UTF-16 order). */
export function compareKeys(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

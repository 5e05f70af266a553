import { describe, expect, it } from 'vitest';
import { walKey } from '../../core/keys.ts';
import {
  BundleIntegrityError,
  bundleKeyOf,
  bundleTail,
  encodeBundleIndex,
  isBundleableWalKey,
  LOCATOR_BYTES,
  parseBundleIndex,
  parseLocator,
  parseWalBundleKey,
} from '../../core/wal-bundle.ts';

const a = '000000010000000000000003';
const b = '000000010000000000000007';
const member = (name: string, length: number) => ({
  key: walKey('c', name, 'ab'.repeat(32)),
  length,
  sha256: 'cd'.repeat(32),
});

describe('WAL bundle format', () => {
  it('keys sort by the last segment, so a listing after a name reaches its bundle first', () => {
    const key = bundleKeyOf('c', '00000001', a, b, [member(a, 5), member(b, 7)]);
    expect(key).toMatch(
      /^v1\/c\/wal-bundles\/00000001\/000000010000000000000007-000000010000000000000003-[0-9a-f]{16}\.pgkb$/,
    );
    expect(parseWalBundleKey(key)).toMatchObject({ cluster: 'c', timeline: '00000001', first: a, last: b });
    expect(parseWalBundleKey(key.replace('.pgkb', '.zst.age'))).toBeUndefined();
    // First after last, or a segment of another timeline: not a bundle key.
    expect(parseWalBundleKey(`v1/c/wal-bundles/00000001/${a}-${b}-0123456789abcdef.pgkb`)).toBeUndefined();
    expect(parseWalBundleKey(`v1/c/wal-bundles/00000002/${b}-${a}-0123456789abcdef.pgkb`)).toBeUndefined();
  });

  it('bundles whole segments only', () => {
    expect(isBundleableWalKey(walKey('c', a, 'ab'.repeat(32)))).toBe(true);
    expect(isBundleableWalKey(walKey('c', '00000002.history', 'ab'.repeat(32)))).toBe(false);
    expect(isBundleableWalKey(walKey('c', `${a}.partial`, 'ab'.repeat(32)))).toBe(false);
  });

  it('round-trips the index through the tail and checks it against the key', () => {
    const { index, members } = encodeBundleIndex([member(a, 5), member(b, 7)]);
    expect(members.map((m) => m.offset)).toEqual([0, 5]);
    const key = bundleKeyOf('c', '00000001', a, b, members);
    const tail = bundleTail(index, 12);
    const size = 12 + tail.length;
    const locator = parseLocator(key, tail.subarray(tail.length - LOCATOR_BYTES), size);
    expect(locator).toEqual({ offset: 12, length: index.length });
    expect(parseBundleIndex(key, index, 12)).toEqual(members);
    expect(() => parseLocator(key, tail.subarray(tail.length - LOCATOR_BYTES), size + 1)).toThrow(
      BundleIntegrityError,
    );
    expect(() => parseBundleIndex(key, index, 13)).toThrow(/end at byte 12 but the index starts at 13/);
  });

  it('refuses an index naming a segment outside its key range or another cluster', () => {
    for (const members of [
      [member(a, 5), member('000000010000000000000009', 7)],
      [{ ...member(a, 5), key: walKey('other', a, 'ab'.repeat(32)) }],
    ]) {
      const { index } = encodeBundleIndex(members);
      const key = bundleKeyOf('c', '00000001', a, b, members);
      expect(() => parseBundleIndex(key, index, 12)).toThrow(/is not a segment of v1\/c\/wal\/00000001\//);
    }
  });
});

import { describe, expect, it } from 'vitest';
import { manifestKey, walKey } from '../../core/keys.ts';
import {
  advanceStream,
  isSettled,
  MAX_BACKUP_MS,
  parseTargetCursors,
  SETTLE_MS,
} from '../../core/replication-cursor.ts';

const now = new Date('2026-11-30T12:00:00Z');
const ago = (ms: number) => new Date(now.getTime() - ms);
const MIN = 60_000;
const wal = (n: number) =>
  walKey('main', `0000000100000000000000${n.toString(16).toUpperCase().padStart(2, '0')}`, 'a'.repeat(64));

describe('replication cursor', () => {
  it('passes only the settled keys at the start of what was handled', () => {
    const handled = [
      { key: wal(1), lastModified: ago(40 * MIN) },
      { key: wal(2), lastModified: ago(20 * MIN) },
      { key: wal(3), lastModified: ago(5 * MIN) }, // still within the settle window
      { key: wal(4), lastModified: ago(30 * MIN) },
    ];
    const next = advanceStream({ after: wal(0), copied: [] }, handled, now, false);
    // wal(4) is settled but comes after an unsettled key: a late push of wal(3)'s neighbours is
    // still listed next time.
    expect(next).toEqual({ after: wal(2), copied: [] });
  });

  it('a late parallel push before an unsettled key is still after the cursor', () => {
    const first = advanceStream(undefined, [{ key: wal(5), lastModified: ago(2 * MIN) }], now, false);
    expect(first.after).toBeUndefined();
    // wal(4) lands after wal(5): the next listing (after `undefined`) still finds it.
    expect(wal(4) > (first.after ?? '')).toBe(true);
  });

  it('never passes a manifest whose backup may still be written before it, and remembers the copied ones', () => {
    const stamp = (d: Date) =>
      d
        .toISOString()
        .replace(/[-:]/g, '')
        .replace(/\.\d{3}Z$/, 'Z');
    const old = manifestKey('main', `${stamp(ago(MAX_BACKUP_MS + 60 * MIN))}-0001`);
    const recent = manifestKey('main', `${stamp(ago(2 * 60 * MIN))}-0002`);
    expect(isSettled({ key: old, lastModified: ago(SETTLE_MS + MIN) }, now)).toBe(true);
    // Stored long ago, but its backup id is younger than the longest backup: not settled.
    expect(isSettled({ key: recent, lastModified: ago(SETTLE_MS + MIN) }, now)).toBe(false);
    const next = advanceStream(
      undefined,
      [
        { key: old, lastModified: ago(SETTLE_MS + MIN) },
        { key: recent, lastModified: ago(SETTLE_MS + MIN) },
      ],
      now,
      true,
    );
    expect(next).toEqual({ after: old, copied: [recent] });
    // Once the cursor passes a remembered key, it is dropped from the list.
    expect(advanceStream(next, [], now, true)).toEqual(next);
  });

  it('rejects a stored cursor of the wrong shape, naming the fix', () => {
    expect(() => parseTargetCursors('{"format":"x"}', 'pipeline/replication/b2/cursor.json')).toThrow(
      /invalid replication cursor pipeline\/replication\/b2\/cursor.json: .*delete it and start a run with \{"reconcile": true\}/,
    );
  });
});

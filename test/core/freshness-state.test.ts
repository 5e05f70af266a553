// The freshness state's walk of one WAL timeline, the gap count it publishes and its mark of the
// verification reports read, without a server.
import { describe, expect, it } from 'vitest';
import {
  advanceReports,
  archiveGapCount,
  EMPTY_FRESHNESS_STATE,
  type FreshnessState,
  isUnreadReport,
  parseFreshnessState,
  walkTimeline,
} from '../../core/freshness-state.ts';
import { walKey } from '../../core/keys.ts';
import { SETTLE_MS } from '../../core/replication-cursor.ts';
import { walSegmentFileNameFromNumber } from '../../core/wal-names.ts';

const NOW = new Date('2026-11-30T12:00:00Z');
const OLD = new Date(NOW.getTime() - SETTLE_MS - 1);
const FRESH = new Date(NOW.getTime() - 1_000);
const seg = (n: number, timeline = 1) => walSegmentFileNameFromNumber(timeline, n);
const listed = (numbers: number[], lastModified: Date, timeline = 1) =>
  numbers.map((n) => ({ key: walKey('c', seg(n, timeline), 'ab'.repeat(32)), lastModified }));

function withTimeline(
  t: ReturnType<typeof walkTimeline>,
  bases: FreshnessState['bases'] = {},
): FreshnessState {
  return { ...EMPTY_FRESHNESS_STATE, bases, wal: { '00000001': t } };
}

describe('walkTimeline', () => {
  it('records a gap between settled segments, across a log id boundary too', () => {
    const t = walkTimeline(undefined, 1, listed([0xfe, 0x100, 0x101], OLD), NOW);
    expect(t.gaps).toEqual([{ from: seg(0xff), to: seg(0xff), missingSegments: 1 }]);
    expect(t.lastSegment).toBe(seg(0x101));
    expect(t.oldestSegment).toBe(seg(0xfe));
    expect(archiveGapCount(withTimeline(t))).toBe(1);
  });

  it('does not judge the unsettled tail, and does not pass it', () => {
    const first = walkTimeline(undefined, 1, [...listed([1, 2], OLD), ...listed([4], FRESH)], NOW);
    expect(first.gaps).toEqual([]);
    expect(first.after).toBe(walKey('c', seg(2), 'ab'.repeat(32)));
    expect(first.newestStoredAt).toBe(FRESH.toISOString());
    // Segment 3 arrived late; the next run lists 3 and 4 again, both settled now.
    const later = new Date(NOW.getTime() + SETTLE_MS);
    const second = walkTimeline(first, 1, listed([3, 4], OLD), later);
    expect(second.gaps).toEqual([]);
    expect(second.lastSegment).toBe(seg(4));
  });

  it('keeps a gap found, whatever comes after', () => {
    const first = walkTimeline(undefined, 1, listed([1, 3], OLD), NOW);
    const second = walkTimeline(first, 1, listed([4, 5], OLD), NOW);
    const third = walkTimeline(second, 1, [], NOW);
    expect(third.gaps).toEqual([{ from: seg(2), to: seg(2), missingSegments: 1 }]);
    expect(third.after).toBe(walKey('c', seg(5), 'ab'.repeat(32)));
  });

  it('counts no gap before the oldest base backup on the timeline', () => {
    const t = walkTimeline(undefined, 1, listed([1, 3, 4, 6], OLD), NOW);
    expect(archiveGapCount(withTimeline(t))).toBe(2);
    expect(
      archiveGapCount(
        withTimeline(t, { '00000001': { backupId: '20261130T000000Z-aaaa', startWalFile: seg(3) } }),
      ),
    ).toBe(1);
  });
});

describe('parseFreshnessState', () => {
  it('refuses a state of another shape, saying how to start again', () => {
    expect(() => parseFreshnessState('{"format":"other"}', 'pipeline/freshness/c.json')).toThrow(
      /invalid freshness state pipeline\/freshness\/c.json: .*delete it and the next run walks the archive again/,
    );
  });
});

describe('the verification reports read', () => {
  const at = (iso: string) => new Date(iso);
  it("reads again only what was stored in or after the mark's second and not read in it", () => {
    const listed = [
      { key: 'verify/c/a.json', lastModified: at('2026-11-01T00:00:05.000Z') },
      { key: 'verify/c/b.json', lastModified: at('2026-11-01T00:00:07.000Z') },
    ];
    const state = advanceReports(EMPTY_FRESHNESS_STATE, listed, NOW);
    expect(state.reports).toEqual({ second: '2026-11-01T00:00:07.000Z', keys: ['verify/c/b.json'] });
    expect(listed.map((o) => isUnreadReport(state, o))).toEqual([false, false]);
    // Stored in the same second as the mark but listed only now: read.
    expect(
      isUnreadReport(state, { key: 'verify/c/c.json', lastModified: at('2026-11-01T00:00:07.400Z') }),
    ).toBe(true);
    expect(
      isUnreadReport(state, { key: 'verify/c/d.json', lastModified: at('2026-11-01T00:00:06.000Z') }),
    ).toBe(false);
  });

  it('does not move the mark past a report that has not settled', () => {
    const state = advanceReports(
      EMPTY_FRESHNESS_STATE,
      [{ key: 'verify/c/a.json', lastModified: FRESH }],
      NOW,
    );
    expect(state.reports).toBeUndefined();
    expect(parseFreshnessState(JSON.stringify(state), 'x')).toEqual(state);
  });
});

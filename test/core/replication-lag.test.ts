// The lag record's rules without a server: which entry wins when runs overlap, and the lag
// freshness computes from an entry and the newest object ingest stored.
import { describe, expect, it } from 'vitest';
import { EMPTY_LAG, lagSeconds, mergeLag, parseTargetLag, supersedes } from '../../core/replication-lag.ts';

const at = (minute: number) => new Date(Date.UTC(2026, 10, 30, 12, minute)).toISOString();
const NOW = new Date(at(60));

describe('lagSeconds', () => {
  it('is 0 when the last listing left nothing missing and ingest stored nothing after it', () => {
    expect(lagSeconds({ listedAt: at(50) }, new Date(at(49)), NOW)).toBe(0);
    expect(lagSeconds({ listedAt: at(50) }, undefined, NOW)).toBe(0);
  });

  it('counts from the listing once ingest stored something after it: it grows while no run lists again', () => {
    expect(lagSeconds({ listedAt: at(50) }, new Date(at(51)), NOW)).toBe(10 * 60);
    expect(lagSeconds({ listedAt: at(50) }, new Date(at(51)), new Date(at(120)))).toBe(70 * 60);
  });

  it('counts an object stored in the second the listing started as unlisted: listings give whole seconds', () => {
    const listedAt = new Date(Date.parse(at(50)) + 300).toISOString();
    expect(lagSeconds({ listedAt }, new Date(at(50)), NOW)).toBeCloseTo(10 * 60 - 0.3, 3);
    expect(lagSeconds({ listedAt }, new Date(Date.parse(at(50)) - 1000), NOW)).toBe(0);
  });

  it('counts from the oldest object left missing, which is older than the listing', () => {
    expect(lagSeconds({ listedAt: at(50), oldestMissing: at(20) }, new Date(at(49)), NOW)).toBe(40 * 60);
    expect(lagSeconds({ listedAt: at(50), oldestMissing: at(20) }, new Date(at(55)), NOW)).toBe(40 * 60);
  });
});

describe('mergeLag', () => {
  it('keeps the later listing: a run that listed earlier and finished later does not replace it', () => {
    const later = { listedAt: at(50), oldestMissing: at(45) };
    const earlier = { listedAt: at(40) };
    expect(supersedes(earlier, later)).toBe(false);
    const merged = mergeLag(mergeLag(EMPTY_LAG, { a: later }), { a: earlier, b: earlier });
    expect(merged.clusters).toEqual({ a: later, b: earlier });
  });

  it('on the same listing time keeps the entry with the older missing object', () => {
    const clean = { listedAt: at(50) };
    const behind = { listedAt: at(50), oldestMissing: at(30) };
    expect(mergeLag(mergeLag(EMPTY_LAG, { a: behind }), { a: clean }).clusters.a).toEqual(behind);
    expect(mergeLag(mergeLag(EMPTY_LAG, { a: clean }), { a: behind }).clusters.a).toEqual(behind);
  });

  it("a record that is not the pipeline's shape is refused with the fix", () => {
    expect(() => parseTargetLag('{"format":"x","clusters":{}}', 'pipeline/replication/b2/lag.json')).toThrow(
      /invalid replication lag record pipeline\/replication\/b2\/lag.json: .*delete it/,
    );
  });
});

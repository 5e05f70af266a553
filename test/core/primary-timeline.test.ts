import { describe, expect, it } from 'vitest';
import { walKey } from '../../core/keys.ts';
import { primaryTimeline } from '../../core/primary-timeline.ts';

const sha = 'a'.repeat(64);
const at = (name: string, iso: string) => ({ key: walKey('main', name, sha), lastModified: new Date(iso) });

describe('primaryTimeline', () => {
  it('is the timeline of the segment stored last, not the highest timeline', () => {
    expect(
      primaryTimeline([
        at('000000010000000000000003', '2026-01-01T00:00:00Z'),
        at('00000002.history', '2026-01-01T00:01:00Z'),
        at('000000020000000000000004', '2026-01-01T00:02:00Z'),
        at('000000010000000000000004', '2026-01-01T00:03:00Z'),
      ]),
    ).toBe(1);
  });

  it("follows a real failover from the new primary's first segment on", () => {
    expect(
      primaryTimeline([
        at('000000010000000000000004', '2026-01-01T00:00:00Z'),
        at('000000010000000000000005.partial', '2026-01-01T00:01:00Z'),
        at('00000002.history', '2026-01-01T00:01:00Z'),
        at('000000020000000000000005', '2026-01-01T00:02:00Z'),
      ]),
    ).toBe(2);
  });

  it('ignores history, partial and backup history files, breaks ties by the higher timeline, and is undefined without segments', () => {
    expect(
      primaryTimeline([
        at('000000010000000000000004', '2026-01-01T00:00:00Z'),
        at('00000003.history', '2026-01-01T00:05:00Z'),
        at('000000020000000000000004.partial', '2026-01-01T00:05:00Z'),
        at('000000010000000000000004.00000028.backup', '2026-01-01T00:05:00Z'),
      ]),
    ).toBe(1);
    expect(
      primaryTimeline([
        at('000000010000000000000004', '2026-01-01T00:00:00Z'),
        at('000000020000000000000004', '2026-01-01T00:00:00Z'),
      ]),
    ).toBe(2);
    expect(primaryTimeline([{ key: 'v1/main/manifests/x.json', lastModified: new Date() }])).toBeUndefined();
    expect(primaryTimeline([])).toBeUndefined();
  });
});

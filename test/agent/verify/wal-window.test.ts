/** The WAL window arithmetic of PITR verification: no server needed. */
import { expect, it } from 'vitest';
import { defaultTargetLsn, formatLsn, seededFraction, segmentRun } from '../../../agent/verify/wal-window.ts';
import type { Manifest } from '../../../core/manifest.ts';
import { parseLsn } from '../../../core/wal-names.ts';

const base = (stopLsn: string) => ({ stopLsn }) as Manifest;

it('names the first segment missing from a run', () => {
  const run = segmentRun(1, 2, 6, new Set([2, 3, 5, 6]));
  expect(run.names).toEqual([
    '000000010000000000000002',
    '000000010000000000000003',
    '000000010000000000000004',
    '000000010000000000000005',
    '000000010000000000000006',
  ]);
  expect(run.firstMissing).toBe('000000010000000000000004');
  expect(segmentRun(1, 2, 3, new Set([2, 3])).firstMissing).toBeUndefined();
});

it('draws the default target inside the window, the same for the same run id', () => {
  const archived = new Set([2, 3, 4, 5, 6, 7, 8]);
  const lower = parseLsn('0/2000100');
  const upper = 8n * 16n * 1024n * 1024n;
  const targets = ['a', 'b', 'c', 'd', 'e'].map((id) =>
    defaultTargetLsn([base('0/2000100'), base('0/5000000')], archived, id),
  );
  for (const t of targets) {
    expect(parseLsn(t)).toBeGreaterThanOrEqual(lower);
    expect(parseLsn(t)).toBeLessThanOrEqual(upper);
  }
  expect(new Set(targets).size).toBeGreaterThan(1);
  expect(defaultTargetLsn([base('0/2000100')], archived, 'a')).toBe(targets[0]);
  expect(seededFraction('x')).toBe(seededFraction('x'));
  // No WAL past the backup: its end is the only point there is.
  expect(defaultTargetLsn([base('0/2000100')], new Set([2]), 'a')).toBe('0/2000100');
  expect(formatLsn(parseLsn('1A/B374D848'))).toBe('1A/B374D848');
});

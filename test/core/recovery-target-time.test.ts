import { describe, expect, it } from 'vitest';
import { parseTargetTime } from '../../core/recovery-target-time.ts';

describe('parseTargetTime', () => {
  it('reads ISO 8601 and PostgreSQL timestamptz forms with a zone, to the same instant PostgreSQL reads', () => {
    expect(parseTargetTime('2026-11-29T14:30:00Z')).toEqual({
      value: '2026-11-29T14:30:00+00:00',
      epochMs: Date.UTC(2026, 10, 29, 14, 30, 0),
    });
    expect(parseTargetTime('2026-11-29 15:30:00.123456+01').value).toBe('2026-11-29T15:30:00.123456+01:00');
    expect(parseTargetTime('2026-11-29 15:30:00.123456+01').epochMs).toBe(
      Date.UTC(2026, 10, 29, 14, 30, 0, 123),
    );
    expect(parseTargetTime('2026-11-29 09:00 -0530').epochMs).toBe(Date.UTC(2026, 10, 29, 14, 30));
    expect(parseTargetTime('2026-11-29 14:30:00 UTC').value).toBe('2026-11-29T14:30:00+00:00');
  });

  it('refuses words, missing zones and dates that do not exist, naming the accepted forms', () => {
    expect(() => parseTargetTime('yesterday 3pm')).toThrow(
      /is not a time with a zone: use ISO 8601 with a zone/,
    );
    expect(() => parseTargetTime('2026-11-29 14:30:00')).toThrow(/has no time zone/);
    expect(() => parseTargetTime('2026-11-29T14:30')).toThrow(/has no time zone/);
    expect(() => parseTargetTime('2026-02-30T14:30:00Z')).toThrow(/is not a valid date and time/);
    expect(() => parseTargetTime('2026-11-29T24:30:00Z')).toThrow(/is not a valid date and time/);
    expect(() => parseTargetTime('2026-11-29T14:30:00 Europe/Paris')).toThrow(/PostgreSQL timestamptz/);
  });
});

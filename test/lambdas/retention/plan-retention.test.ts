// Object Lock as HeadObject reports it: a legal hold or a retain-until date still ahead locks the
// object (retention then skips and reports it); an expired date does not.
import { describe, expect, it } from 'vitest';
import { isLockedAt } from '../../../lambdas/retention/plan-retention.ts';

const now = new Date('2026-11-22T04:00:00Z');

describe('isLockedAt', () => {
  it('a retain-until date after now locks; one already past does not', () => {
    expect(isLockedAt({ ObjectLockRetainUntilDate: new Date('2026-11-23T00:00:00Z') }, now)).toBe(true);
    expect(isLockedAt({ ObjectLockRetainUntilDate: new Date('2026-11-21T00:00:00Z') }, now)).toBe(false);
  });

  it('a legal hold locks whatever the date; no lock fields means not locked', () => {
    expect(isLockedAt({ ObjectLockLegalHoldStatus: 'ON' }, now)).toBe(true);
    expect(
      isLockedAt(
        { ObjectLockLegalHoldStatus: 'OFF', ObjectLockRetainUntilDate: new Date('2026-11-01T00:00:00Z') },
        now,
      ),
    ).toBe(false);
    expect(isLockedAt({}, now)).toBe(false);
  });
});

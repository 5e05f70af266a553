// Only a refusal that names Object Lock is reported as "locked"; any other access denial is a
// permission problem and fails the batch (so it alerts instead of silently keeping everything).
import { describe, expect, it } from 'vitest';
import { isObjectLockRefusal } from '../../../lambdas/retention/delete-batch.ts';
import { AccessDeniedError } from '../../../storage/storage.ts';

function sdkError(name: string, message: string): Error {
  const error = new Error(message);
  error.name = name;
  return error;
}

describe('isObjectLockRefusal', () => {
  it('recognises S3 refusing to delete a locked version', () => {
    const cause = sdkError('AccessDenied', 'Access Denied because object protected by object lock.');
    expect(isObjectLockRefusal(new AccessDeniedError('access denied to delete v1/main/x', { cause }))).toBe(
      true,
    );
  });

  it('does not take a missing permission for a lock', () => {
    const cause = sdkError('AccessDenied', 'Access Denied');
    expect(isObjectLockRefusal(new AccessDeniedError('access denied to delete v1/main/x', { cause }))).toBe(
      false,
    );
    expect(isObjectLockRefusal(new Error('socket hang up'))).toBe(false);
  });
});

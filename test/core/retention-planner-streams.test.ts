// Stream backups (`pgkeep stream backup`) in the retention planner: each name is its own group, so
// one application's frequent backups never push out another's, nor the database backups.
import { describe, expect, it } from 'vitest';
import { logicalDumpKey, manifestKey, streamObjectKey } from '../../core/keys.ts';
import { planRetention, type RetentionBackup } from '../../core/retention-planner.ts';

const CLUSTER = 'nixhost';

function stream(name: string, day: number, hour = 3): RetentionBackup {
  const backupId = `202611${String(day).padStart(2, '0')}T${String(hour).padStart(2, '0')}0000Z-5${String(day).padStart(3, '0')}`;
  return {
    backupId,
    kind: 'stream',
    streamName: name,
    stopTime: `2026-11-${String(day).padStart(2, '0')}T${String(hour).padStart(2, '0')}:00:00Z`,
    manifestKey: manifestKey(CLUSTER, backupId),
    objectKeys: [streamObjectKey(CLUSTER, name, backupId)],
    verified: false,
  };
}

describe('retention of stream backups', () => {
  it('plans each stream name as its own group under the same rules', () => {
    const dump: RetentionBackup = {
      backupId: '20261101T030000Z-0001',
      kind: 'logical',
      stopTime: '2026-11-01T03:00:00Z',
      databases: ['app'],
      manifestKey: manifestKey(CLUSTER, '20261101T030000Z-0001'),
      objectKeys: [logicalDumpKey(CLUSTER, 'app', '20261101T030000Z-0001')],
      verified: false,
    };
    const backups = [
      dump,
      ...[10, 11, 12, 13].map((d) => stream('nextcloud.sql', d)),
      ...[1, 2].map((d) => stream('vaultwarden', d)),
    ];
    const plan = planRetention({
      backups,
      walFiles: [],
      policy: { keepLast: 2, minimumKeep: 1 },
      now: '2026-11-20T00:00:00Z',
    });
    const kept = plan.backups.filter((b) => b.action === 'keep').map((b) => b.backupId);
    expect(kept.sort()).toEqual(
      [
        dump.backupId,
        ...[12, 13].map((d) => stream('nextcloud.sql', d).backupId),
        ...[1, 2].map((d) => stream('vaultwarden', d).backupId),
      ].sort(),
    );
    const deleted = plan.deletions.map((d) => d.key);
    expect(deleted).toEqual([
      manifestKey(CLUSTER, stream('nextcloud.sql', 11).backupId),
      streamObjectKey(CLUSTER, 'nextcloud.sql', stream('nextcloud.sql', 11).backupId),
      manifestKey(CLUSTER, stream('nextcloud.sql', 10).backupId),
      streamObjectKey(CLUSTER, 'nextcloud.sql', stream('nextcloud.sql', 10).backupId),
    ]);
  });
});

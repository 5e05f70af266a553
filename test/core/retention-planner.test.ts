import { describe, expect, it } from 'vitest';
import { baseBackupKey, logicalDumpKey, manifestKey, walKey } from '../../core/keys.ts';
import { type Manifest, validateManifest } from '../../core/manifest.ts';
import {
  planRetention,
  type RetentionBackup,
  type RetentionPolicy,
  type RetentionWalFile,
  retentionBackupFromManifest,
} from '../../core/retention-planner.ts';
import { walSegmentFileName } from '../../core/wal-names.ts';

const CLUSTER = 'main';
const NOW = '2026-11-22T12:00:00.000Z';

function idAt(iso: string, suffix = '0001'): string {
  return `${iso.replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z')}-${suffix}`;
}

function logical(stopTime: string, databases: string[] = ['app'], verified = false): RetentionBackup {
  const backupId = idAt(stopTime);
  return {
    backupId,
    kind: 'logical',
    stopTime,
    databases,
    manifestKey: manifestKey(CLUSTER, backupId),
    objectKeys: databases.map((db) => logicalDumpKey(CLUSTER, db, backupId)),
    verified,
  };
}

/** A base backup starting and stopping in segment `segment` (log 0) of `timeline`. */
function base(stopTime: string, segment: number, timeline = 1, verified = false): RetentionBackup {
  const backupId = idAt(stopTime, 'b000');
  const wal = walSegmentFileName(timeline, 0, segment);
  return {
    backupId,
    kind: 'base',
    stopTime,
    timeline,
    startWalFile: wal,
    stopWalFile: wal,
    manifestKey: manifestKey(CLUSTER, backupId),
    objectKeys: [baseBackupKey(CLUSTER, backupId, 'base')],
    verified,
  };
}

function wal(walFileName: string): RetentionWalFile {
  return { key: walKey(CLUSTER, walFileName, 'ab'.repeat(32)), walFileName, sizeBytes: 1000 };
}

function segments(timeline: number, from: number, to: number): RetentionWalFile[] {
  const out: RetentionWalFile[] = [];
  for (let s = from; s <= to; s++) out.push(wal(walSegmentFileName(timeline, 0, s)));
  return out;
}

function plan(
  backups: RetentionBackup[],
  policy: RetentionPolicy,
  walFiles: RetentionWalFile[] = [],
  locked = [],
) {
  return planRetention({ backups, walFiles, policy, now: NOW, lockedKeys: locked });
}

const action = (p: ReturnType<typeof plan>, b: RetentionBackup) =>
  p.backups.find((d) => d.backupId === b.backupId)?.action;

describe('planRetention: backups', () => {
  it('keeps the last N and deletes the rest, manifest first so no manifest outlives its objects', () => {
    const backups = ['2026-11-18', '2026-11-19', '2026-11-20', '2026-11-21'].map((d) =>
      logical(`${d}T01:00:00.000Z`),
    );
    const p = plan(backups, { keepLast: 2, minimumKeep: 1 });
    expect(p.backups.map((d) => d.action)).toEqual(['keep', 'keep', 'delete', 'delete']);
    expect(p.deletions.map((d) => [d.kind, d.backupId])).toEqual([
      ['manifest', backups[1]!.backupId],
      ['backup-object', backups[1]!.backupId],
      ['manifest', backups[0]!.backupId],
      ['backup-object', backups[0]!.backupId],
    ]);
    expect(p.deletions[0]!.reason).toMatch(/kept by no rule \(minimum 1, keep-last 2\)/);
    expect(p.backups[0]!.keptBy.map((k) => k.rule)).toEqual(['minimum', 'keep-last']);
  });

  it('counts logical backups per database, so a rarely dumped database keeps its dumps', () => {
    const app = ['2026-11-19', '2026-11-20', '2026-11-21'].map((d) => logical(`${d}T01:00:00.000Z`, ['app']));
    const audit = logical('2026-10-01T01:00:00.000Z', ['audit']);
    const p = plan([...app, audit], { keepLast: 1, minimumKeep: 1 });
    expect(action(p, audit)).toBe('keep');
    expect(action(p, app[2]!)).toBe('keep');
    expect(action(p, app[0]!)).toBe('delete');
  });

  it('plans logical and base backups separately', () => {
    const l = logical('2026-11-21T01:00:00.000Z');
    const b = base('2026-11-01T01:00:00.000Z', 1);
    const p = plan([l, b], { keepLast: 1, minimumKeep: 1 });
    expect([action(p, l), action(p, b)]).toEqual(['keep', 'keep']);
  });

  it('keeps the newest backup of each of the last N days that have one', () => {
    const backups = [
      logical('2026-11-17T23:00:00.000Z'),
      logical('2026-11-19T01:00:00.000Z'),
      logical('2026-11-19T13:00:00.000Z'),
      logical('2026-11-21T01:00:00.000Z'),
      logical('2026-11-21T13:00:00.000Z'),
    ];
    const p = plan(backups, { keepDaily: 2, minimumKeep: 1 });
    expect(p.backups.map((d) => [d.stopTime.slice(0, 13), d.action])).toEqual([
      ['2026-11-21T13', 'keep'],
      ['2026-11-21T01', 'delete'],
      ['2026-11-19T13', 'keep'],
      ['2026-11-19T01', 'delete'],
      ['2026-11-17T23', 'delete'],
    ]);
    expect(p.backups[2]!.keptBy).toEqual([
      { rule: 'keep-daily', detail: 'logical "app": newest of 2026-11-19' },
    ]);
  });

  it('uses ISO weeks, months and years in UTC for the longer periods', () => {
    // 2026-12-31 (Thursday) and 2027-01-03 (Sunday) are both in ISO week 2026-W53.
    const backups = [
      logical('2026-12-28T00:30:00.000Z'),
      logical('2026-12-31T10:00:00.000Z'),
      logical('2027-01-03T10:00:00.000Z'),
    ];
    const now = '2027-01-03T12:00:00.000Z';
    const weekly = planRetention({ backups, walFiles: [], now, policy: { keepWeekly: 5, minimumKeep: 1 } });
    expect(weekly.backups.map((d) => d.action)).toEqual(['keep', 'delete', 'delete']);
    expect(weekly.backups[0]!.keptBy.at(-1)?.detail).toBe('logical "app": newest of 2026-W53');
    const monthly = planRetention({ backups, walFiles: [], now, policy: { keepMonthly: 5, minimumKeep: 1 } });
    expect(monthly.backups.map((d) => d.action)).toEqual(['keep', 'keep', 'delete']);
    const yearly = planRetention({ backups, walFiles: [], now, policy: { keepYearly: 5, minimumKeep: 1 } });
    expect(yearly.backups.map((d) => d.action)).toEqual(['keep', 'keep', 'delete']);
  });

  it('always keeps the newest verified backup, however old', () => {
    const old = logical('2026-01-01T01:00:00.000Z', ['app'], true);
    const recent = ['2026-11-20', '2026-11-21'].map((d) => logical(`${d}T01:00:00.000Z`));
    const p = plan([old, ...recent], { keepLast: 1, minimumKeep: 1 });
    expect(action(p, old)).toBe('keep');
    expect(p.backups.find((d) => d.backupId === old.backupId)?.keptBy.map((k) => k.rule)).toEqual([
      'newest-verified',
    ]);
    expect(action(p, recent[0]!)).toBe('delete');
  });

  it('keeps the minimum even when every other rule is off', () => {
    const backups = ['2026-11-19', '2026-11-20', '2026-11-21'].map((d) => logical(`${d}T01:00:00.000Z`));
    const p = plan(backups, { minimumKeep: 2 });
    expect(p.summary).toMatchObject({ backupsKept: 2, backupsDeleted: 1 });
  });

  it('leaves a backup under Object Lock whole and reports its locked keys', () => {
    const old = logical('2026-11-01T01:00:00.000Z');
    const recent = logical('2026-11-21T01:00:00.000Z');
    const lockedKey = old.objectKeys[0]!;
    const p = planRetention({
      backups: [old, recent],
      walFiles: [],
      policy: { minimumKeep: 1 },
      now: NOW,
      lockedKeys: [lockedKey],
    });
    expect(action(p, old)).toBe('locked');
    expect(p.deletions).toEqual([]);
    expect(p.locked).toEqual([
      { key: lockedKey, backupId: old.backupId, reason: expect.stringMatching(/Object Lock/) },
    ]);
  });

  it('rejects a policy that could delete everything or is not a count', () => {
    expect(() => plan([], { minimumKeep: 0 })).toThrow(/minimumKeep is 0; use an integer of at least 1/);
    expect(() => plan([], { minimumKeep: 1, keepDaily: 1.5 })).toThrow(/keepDaily is 1.5/);
    expect(() => plan([], { minimumKeep: 1, pitrWindowDays: -1 })).toThrow(/pitrWindowDays is -1/);
  });
});

describe('planRetention: PITR window and WAL', () => {
  // A base backup every day at 01:00 from Nov 15 to Nov 21, each starting in the next segment.
  const days = [15, 16, 17, 18, 19, 20, 21];
  const bases = days.map((d, i) => base(`2026-11-${d}T01:00:00.000Z`, 2 * i + 1));
  const walFiles = [...segments(1, 0, 14), wal('000000010000000000000003.00000028.backup')];

  it('keeps every base backup in the window plus the newest one before it, and the WAL from that one on', () => {
    // The window is [Nov 19 12:00, Nov 22 12:00]: Nov 20 and 21 are inside, Nov 19 is the anchor.
    const p = plan(bases, { pitrWindowDays: 3, minimumKeep: 1 }, walFiles);
    expect(p.pitrWindow).toEqual({ start: '2026-11-19T12:00:00.000Z', end: NOW });
    expect(p.backups.map((d) => [d.stopTime.slice(0, 10), d.action, d.keptBy.map((k) => k.rule)])).toEqual([
      ['2026-11-21', 'keep', ['minimum', 'pitr-window']],
      ['2026-11-20', 'keep', ['pitr-window']],
      ['2026-11-19', 'keep', ['pitr-anchor']],
      ['2026-11-18', 'delete', []],
      ['2026-11-17', 'delete', []],
      ['2026-11-16', 'delete', []],
      ['2026-11-15', 'delete', []],
    ]);
    // The Nov 19 backup started in segment 9: segments 0-8 and the backup history file go.
    expect(p.wal).toMatchObject({
      keepFrom: { walFileName: '000000010000000000000009', backupId: bases[4]!.backupId },
      deletedCount: 10,
      keptCount: 6,
    });
    const walDeleted = p.deletions.filter((d) => d.kind === 'wal').map((d) => d.walFileName);
    expect(walDeleted).toEqual([
      ...segments(1, 0, 3).map((w) => w.walFileName),
      '000000010000000000000003.00000028.backup',
      ...segments(1, 4, 8).map((w) => w.walFileName),
    ]);
    expect(p.deletions.at(-1)?.reason).toBe(
      `WAL 000000010000000000000008 precedes 000000010000000000000009, the start of the oldest kept base backup ${bases[4]!.backupId}`,
    );
    // WAL is deleted after every backup.
    expect(p.deletions.findIndex((d) => d.kind === 'wal')).toBe(4 * 2);
    expect(p.summary.walBytesDeleted).toBe(10 * 1000);
  });

  it('keeps the WAL of the oldest kept base backup even when a count rule keeps it', () => {
    const verifiedOld = { ...bases[0]!, verified: true };
    const p = plan([verifiedOld, ...bases.slice(1)], { pitrWindowDays: 1, minimumKeep: 1 }, walFiles);
    expect(action(p, verifiedOld)).toBe('keep');
    // It started in segment 1: only segment 0 goes.
    expect(p.deletions.filter((d) => d.kind === 'wal').map((d) => d.walFileName)).toEqual([
      '000000010000000000000000',
    ]);
  });

  it('keeps the anchor that started last when base backups overlap', () => {
    // B started in segment 2 and stopped last; A started in segment 3 but stopped before B.
    const a = { ...base('2026-11-10T02:00:00.000Z', 3), stopWalFile: walSegmentFileName(1, 0, 3) };
    const b = { ...base('2026-11-10T03:00:00.000Z', 2), stopWalFile: walSegmentFileName(1, 0, 4) };
    const p = plan([a, b], { pitrWindowDays: 1, minimumKeep: 1 }, segments(1, 0, 6));
    expect(action(p, a)).toBe('keep');
    expect(p.backups.find((d) => d.backupId === a.backupId)?.keptBy[0]?.detail).toMatch(/started last/);
    expect(p.wal.keepFrom?.walFileName).toBe('000000010000000000000002');
  });

  it('keeps WAL of every timeline from the oldest start on, and every history file', () => {
    const b = base('2026-11-21T01:00:00.000Z', 5, 2);
    const files = [
      ...segments(1, 0, 5),
      wal('000000010000000000000005.partial'),
      ...segments(2, 5, 7),
      wal('00000002.history'),
      ...segments(3, 3, 4),
      wal('00000003.history'),
    ];
    const p = plan([b], { minimumKeep: 1 }, files);
    const deleted = p.deletions.map((d) => d.walFileName);
    expect(deleted).toEqual([
      '000000010000000000000000',
      '000000010000000000000001',
      '000000010000000000000002',
      '000000010000000000000003',
      '000000030000000000000003',
      '000000010000000000000004',
      '000000030000000000000004',
    ]);
    expect(p.wal.keptCount).toBe(files.length - deleted.length);
  });

  it('keeps all WAL when no base backup is kept or a kept one does not say where it starts', () => {
    const none = plan([logical('2026-11-21T01:00:00.000Z')], { minimumKeep: 1 }, segments(1, 0, 3));
    expect(none.wal).toMatchObject({ deletedCount: 0, keptCount: 4 });
    expect(none.warnings).toEqual([
      'all WAL is kept: no base backup is kept, so no WAL is known to be unneeded',
    ]);

    const { startWalFile: _, ...unknownStart } = base('2026-11-21T01:00:00.000Z', 2);
    const p = plan([unknownStart], { minimumKeep: 1 }, segments(1, 0, 3));
    expect(p.wal.deletedCount).toBe(0);
    expect(p.wal.keepAllReason).toMatch(/has no valid startWalFile/);
  });

  it('keeps WAL objects with names it does not understand, and says so', () => {
    const odd = { key: 'v1/main/wal/00000001/garbage-0000000000000000.zst.age', walFileName: 'garbage' };
    const p = plan([base('2026-11-21T01:00:00.000Z', 2)], { minimumKeep: 1 }, [odd, ...segments(1, 0, 3)]);
    expect(p.deletions.map((d) => d.walFileName)).toEqual([
      '000000010000000000000000',
      '000000010000000000000001',
    ]);
    expect(p.warnings).toEqual([`WAL object ${odd.key} has an unrecognised file name "garbage"; kept`]);
  });

  it('skips and reports WAL under Object Lock', () => {
    const files = segments(1, 0, 3);
    const p = planRetention({
      backups: [base('2026-11-21T01:00:00.000Z', 2)],
      walFiles: files,
      policy: { minimumKeep: 1 },
      now: NOW,
      lockedKeys: new Set([files[0]!.key]),
    });
    expect(p.deletions.map((d) => d.key)).toEqual([files[1]!.key]);
    expect(p.locked).toEqual([
      {
        key: files[0]!.key,
        walFileName: files[0]!.walFileName,
        reason: expect.stringMatching(/Object Lock/),
      },
    ]);
  });
});

describe('retentionBackupFromManifest', () => {
  it('takes databases, WAL range and keys from a manifest', () => {
    const backupId = '20261121T010000Z-00aa';
    const object = {
      sizeBytes: 1,
      sha256: 'a'.repeat(64),
      plaintextSizeBytes: 1,
      plaintextSha256: 'b'.repeat(64),
      codec: 'zstd',
      encryption: 'age-v1',
    } as const;
    const manifest: Manifest = {
      format: 'pgkeep.manifest.v1',
      backupId,
      cluster: CLUSTER,
      kind: 'logical',
      pgVersionNum: 150018,
      systemIdentifier: '7301',
      startTime: '2026-11-21T00:59:00.000Z',
      stopTime: '2026-11-21T01:00:00.000Z',
      objects: [
        { ...object, key: logicalDumpKey(CLUSTER, 'b', backupId), role: 'dump', database: 'b' },
        { ...object, key: logicalDumpKey(CLUSTER, 'a', backupId), role: 'dump', database: 'a' },
        { ...object, key: `v1/${CLUSTER}/logical/_globals/${backupId}/globals.sql.zst.age`, role: 'globals' },
      ],
      recipientFingerprints: ['x'],
      agentVersion: '0.1.0',
    };
    // Aged by when the repository stored the manifest, not by the stopTime the host wrote.
    const storedAt = new Date('2026-11-21T01:00:07.000Z');
    const key = manifestKey(CLUSTER, backupId);
    expect(retentionBackupFromManifest(validateManifest(manifest, key), key, true, storedAt)).toEqual({
      backupId,
      kind: 'logical',
      stopTime: '2026-11-21T01:00:07.000Z',
      databases: ['a', 'b'],
      manifestKey: manifestKey(CLUSTER, backupId),
      objectKeys: manifest.objects.map((o) => o.key),
      verified: true,
    });
  });

  it('ages a backup taken with a host clock a day behind by its storage time, not its id or times', () => {
    const object = {
      sizeBytes: 1,
      sha256: 'a'.repeat(64),
      plaintextSizeBytes: 1,
      plaintextSha256: 'b'.repeat(64),
      codec: 'zstd',
      encryption: 'age-v1',
    } as const;
    const stored = (backupId: string, hostTime: string, storedAt: string) => {
      const manifest: Manifest = {
        format: 'pgkeep.manifest.v1',
        backupId,
        cluster: CLUSTER,
        kind: 'logical',
        pgVersionNum: 150018,
        systemIdentifier: '7301',
        startTime: hostTime,
        stopTime: hostTime,
        objects: [
          { ...object, key: logicalDumpKey(CLUSTER, 'app', backupId), role: 'dump', database: 'app' },
        ],
        recipientFingerprints: ['x'],
        agentVersion: '0.1.0',
      };
      const key = manifestKey(CLUSTER, backupId);
      return retentionBackupFromManifest(validateManifest(manifest, key), key, false, new Date(storedAt));
    };
    // Stored an hour before NOW by a host whose clock said a day earlier.
    const skewed = stored('20261121T110000Z-0001', '2026-11-21T11:00:00.000Z', '2026-11-22T11:00:00.000Z');
    // Stored three hours before NOW by a host with the right clock.
    const right = stored('20261122T090000Z-0002', '2026-11-22T09:00:00.000Z', '2026-11-22T09:00:00.000Z');
    const p = plan([skewed, right], { minimumKeep: 1, keepDaily: 1 });
    // By storage time the skewed backup is today's newest: it is kept, the other is not.
    expect(action(p, skewed)).toBe('keep');
    expect(action(p, right)).toBe('delete');
  });
});

// The ingest pruning planner without servers: the cases the s3rver test does not reach.
import { describe, expect, it } from 'vitest';
import { type IngestObject, type PruneTarget, planIngestPrune } from '../../core/ingest-prune.ts';
import type { RetentionBackup, RetentionWalFile } from '../../core/retention-types.ts';

const now = new Date('2026-11-30T00:00:00Z');
const old = new Date('2026-10-01T00:00:00Z');
const seg = (n: number) => `0000000100000000000000${n.toString(16).toUpperCase().padStart(2, '0')}`;

function backup(id: string, kind: 'base' | 'logical', start?: number): RetentionBackup {
  return {
    backupId: id,
    kind,
    stopTime: old.toISOString(),
    ...(start === undefined ? {} : { startWalFile: seg(start) }),
    manifestKey: `v1/c/manifests/${id}.json`,
    objectKeys: [`v1/c/${kind === 'base' ? 'base' : 'logical/shop'}/${id}/x.zst.age`],
    verified: false,
  };
}

const wal = (n: number): RetentionWalFile => ({
  key: `v1/c/wal/00000001/${seg(n)}-ab.zst.age`,
  walFileName: seg(n),
});

function plan(backups: RetentionBackup[], walFiles: RetentionWalFile[], targets?: PruneTarget[]) {
  const keys = [...backups.flatMap((b) => [b.manifestKey, ...b.objectKeys]), ...walFiles.map((w) => w.key)];
  const objects = new Map<string, IngestObject>(
    keys.map((key) => [key, { key, sizeBytes: 1, lastModified: old }]),
  );
  const everywhere = (name: string): PruneTarget => ({ name, holds: new Set(keys), drops: new Set() });
  return planIngestPrune({
    backups,
    walFiles,
    objects,
    targets: targets ?? [everywhere('a'), everywhere('b')],
    keepDays: 30,
    now,
  });
}

describe('planIngestPrune', () => {
  it('prunes nothing without targets: ingest holds the only copy', () => {
    const result = plan([backup('20261001T000000Z-0001', 'logical')], [wal(1)], []);
    expect(result.deletions).toEqual([]);
    expect(result.kept).toEqual([expect.stringContaining('no targets')]);
  });

  it('prunes old WAL every target is done with when no base backup stays, none when one that stays has no start', () => {
    const logicalOnly = plan([backup('20261001T000000Z-0001', 'logical')], [wal(1), wal(2)]);
    expect(logicalOnly.backupsPruned).toBe(1);
    expect(logicalOnly.walPruned).toBe(2);
    // A target that lacks segment 2 (and keeps it): it and every later segment stay.
    const keys = [
      wal(1).key,
      'v1/c/manifests/20261001T000000Z-0001.json',
      'v1/c/logical/shop/20261001T000000Z-0001/x.zst.age',
    ];
    const lacking = plan(
      [backup('20261001T000000Z-0001', 'logical')],
      [wal(1), wal(2), wal(3)],
      [{ name: 'a', holds: new Set([...keys, wal(3).key]), drops: new Set() }],
    );
    expect(lacking.walPruned).toBe(1);
    expect(lacking.kept).toEqual([expect.stringContaining(`WAL from ${seg(2)} on stays`)]);
    const newer = { ...backup('20261101T000000Z-0002', 'base'), stopTime: now.toISOString() };
    const unknownStart = plan([newer], [wal(1)]);
    expect(unknownStart.walPruned).toBe(0);
    expect(unknownStart.kept).toEqual([expect.stringContaining('start WAL file is unknown')]);
  });

  it('drops the manifest of a backup whose objects an interrupted run already deleted, objects first otherwise', () => {
    const b = backup('20261001T000000Z-0001', 'base', 1);
    const done = plan([b], []);
    expect(done.deletions.map((d) => d.key)).toEqual([...b.objectKeys, b.manifestKey]);
    const keys = [b.manifestKey];
    const interrupted = planIngestPrune({
      backups: [b],
      walFiles: [],
      objects: new Map(keys.map((key) => [key, { key, sizeBytes: 1, lastModified: old }])),
      targets: [{ name: 'a', holds: new Set(keys), drops: new Set() }],
      keepDays: 30,
      now,
    });
    expect(interrupted.deletions.map((d) => d.key)).toEqual([b.manifestKey]);
  });

  it("counts a key a target's policy drops as done there", () => {
    const b = backup('20261001T000000Z-0001', 'logical');
    const keys = [b.manifestKey, ...b.objectKeys];
    const dropping: PruneTarget = { name: 'a', holds: new Set(), drops: new Set(keys) };
    expect(plan([b], [], [dropping]).backupsPruned).toBe(1);
    const keeping: PruneTarget = { name: 'a', holds: new Set(), drops: new Set() };
    expect(plan([b], [], [keeping]).backupsPruned).toBe(0);
  });
});

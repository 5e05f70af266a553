/**
 * The operator's path, each failure mode against a real cluster archiving through pgkeep: set-up
 * that must fail at once with the fix (spool, PGDATA, systemd-unit, basebackup under the wrong
 * cluster name, restore as root), strict recovery targets, `pgkeep info`, `pgkeep check`, and the
 * smaller restore and configuration errors.
 */
import { execFileSync } from 'node:child_process';
import { cp, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { generateX25519Identity } from 'age-encryption';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { manifestKey } from '../../core/keys.ts';
import { type PgCluster, startCluster } from '../support/pg-cluster.ts';
import { runPgkeep } from '../support/pgkeep-cli.ts';
import { archiveSettings, type Harness, makeHarness, switchAndWaitArchived } from './wal/harness.ts';

let h: Harness;
let primary: PgCluster;

beforeAll(async () => {
  h = await makeHarness('opmain');
  primary = await startCluster({ settings: archiveSettings(h) });
  await primary.sql('create database shop');
  await primary.sql("create table t (v text); insert into t values ('old')", 'shop');
  await switchAndWaitArchived(primary);
});

afterAll(async () => {
  await primary?.destroy().catch(() => {});
  if (h) await rm(h.dir, { recursive: true, force: true });
});

describe('set-up fails at once, naming the fix', () => {
  it('systemd-unit takes cluster and spool from the config and needs a data directory', async () => {
    const line = await h.pgkeep(['systemd-unit', '--archive-command']);
    expect(line.stderr).toBe('');
    expect(line.stdout).toContain(`S=${h.spoolDir};R="$S"/opmain/pgdata"$PWD"`);
    expect(line.stdout).toContain('PGKEEP_SPOOL_DIR="$S"');
    expect(line.stdout).not.toContain('/var/lib/pgkeep');

    const noPgdata = await h.pgkeep(['systemd-unit']);
    expect(noPgdata.code).toBe(2);
    expect(noPgdata.stderr).toContain('--pgdata DIR is required');
    const missing = await h.pgkeep(['systemd-unit', '--pgdata', join(h.dir, 'nope')]);
    expect(missing.code).toBe(3);
    expect(missing.stderr).toContain('not a PostgreSQL data directory');
    // The harness spool is outside /var/lib/pgkeep: only --writable lets the unit write it.
    const outside = await h.pgkeep(['systemd-unit', '--pgdata', primary.dataDir]);
    expect(outside.code).toBe(1);
    expect(outside.stderr).toContain(`--writable ${h.spoolDir}`);
    const unit = await h.pgkeep(['systemd-unit', '--pgdata', primary.dataDir, '--writable', h.dir]);
    expect(unit.stderr).toBe('');
    expect(unit.stdout).toContain(`Environment=PGDATA=${primary.dataDir}`);
    expect(unit.stdout).toContain(`Environment=PGKEEP_SPOOL_DIR=${h.spoolDir}`);
    expect(unit.stdout).toContain(`ReadWritePaths=/var/lib/pgkeep ${h.dir}`);
  });

  it('wal-push refuses a spool its user cannot create, instead of exiting 0 on the slow path', async () => {
    const segment = join(primary.dataDir, 'pg_wal', '000000010000000000000001');
    const result = await h.pgkeep(['wal-push', segment], { PGKEEP_SPOOL_DIR: '/root/pgkeep-no/spool' });
    expect(result.code).toBe(3);
    expect(result.stderr).toMatch(
      /spool directory \/root\/pgkeep-no\/spool\/opmain\/pgdata\/\S+ cannot be created/,
    );
    expect(result.stderr).toContain('install -d -o postgres -g postgres -m 0700 /root/pgkeep-no/spool');
  });

  it('the agent refuses to start without a data directory to watch', async () => {
    const none = await h.pgkeep(['agent'], primary.env);
    expect(none.code).toBe(3);
    expect(none.stderr).toContain('PGDATA is not set');
    const wrong = await h.pgkeep(['agent'], { ...primary.env, PGDATA: join(h.dir, 'nope') });
    expect(wrong.code).toBe(3);
    expect(wrong.stderr).toContain(`${join(h.dir, 'nope', 'pg_wal')} (from PGDATA=`);
  });

  it('basebackup under another cluster name fails before uploading anything', async () => {
    const started = Date.now();
    const result = await h.pgkeep(['basebackup'], { ...primary.env, PGKEEP_CLUSTER: 'opother' });
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(result.code).toBe(3);
    expect(result.stderr).toContain('no WAL of this server');
    expect(result.stderr).toContain('archive_command archives under cluster "opmain"');
    expect(result.stderr).toContain('nothing was uploaded');
    const other = await readdir(join(h.repoDir, 'v1')).catch(() => []);
    expect(other).not.toContain('opother');
  });
});

describe('backups, restores and targets', () => {
  let baseId = '';

  it('takes a base backup and two logical backups', async () => {
    const base = await h.pgkeep(['basebackup', '--json'], primary.env);
    expect(base.stderr).toBe('');
    baseId = JSON.parse(base.stdout).backupId;
    expect((await h.pgkeep(['backup', '--db', 'shop'], primary.env)).code).toBe(0);
    await primary.sql("update t set v = 'new'", 'shop');
    expect((await h.pgkeep(['backup', '--db', 'shop'], primary.env)).code).toBe(0);
    await switchAndWaitArchived(primary);
  });

  it('orders two backups of the same second by their times, and --db restores the newer', async () => {
    const list = JSON.parse((await h.pgkeep(['list', '--json'])).stdout) as {
      backupId: string;
      kind: string;
    }[];
    const [older, newer] = list.filter((b) => b.kind === 'logical').map((b) => b.backupId) as [
      string,
      string,
    ];
    // Re-file both under ids of one second whose random suffixes sort the other way round.
    const second = '20261129T000001Z';
    const renamed = { [older]: `${second}-ffff`, [newer]: `${second}-0000` };
    // The objects move with their manifest: a manifest naming keys outside its own backup is rejected.
    for (const [id, newId] of Object.entries(renamed)) {
      const path = join(h.repoDir, manifestKey('opmain', id));
      const manifest = JSON.parse(await readFile(path, 'utf8')) as { objects: { key: string }[] };
      const objects = [];
      for (const object of manifest.objects) {
        const key = object.key.replace(`/${id}/`, `/${newId}/`);
        await mkdir(dirname(join(h.repoDir, key)), { recursive: true });
        await rename(join(h.repoDir, object.key), join(h.repoDir, key));
        objects.push({ ...object, key });
      }
      await writeFile(
        join(h.repoDir, manifestKey('opmain', newId)),
        JSON.stringify({ ...manifest, backupId: newId, objects }),
      );
      await rm(path);
    }
    const relisted = JSON.parse((await h.pgkeep(['list', '--json'])).stdout) as { backupId: string }[];
    expect(relisted.map((b) => b.backupId).filter((id) => id.startsWith(second))).toEqual([
      `${second}-ffff`,
      `${second}-0000`,
    ]);
    const restored = await h.pgkeep(['restore', '--db', 'shop', '--into', 'shop_copy'], primary.env);
    expect(restored.stderr).toBe('');
    expect(restored.stdout).toContain(`${second}-0000`);
    expect(await primary.sql('select v from t', 'shop_copy')).toBe('new');
  });

  it('names a wrong --backup id and the form a physical restore takes', async () => {
    const wrong = await h.pgkeep([
      'restore',
      '--db',
      'shop',
      '--into',
      'x',
      '--backup',
      '20200101T000000Z-abcd',
    ]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain('no backup 20200101T000000Z-abcd of cluster "opmain"');
    expect(wrong.stderr).toContain('pgkeep list');
    const mixed = await h.pgkeep(['restore', '--pgdata', join(h.dir, 'x'), '--db', 'shop']);
    expect(mixed.code).toBe(2);
    expect(mixed.stderr).toContain('--db and --into are for a logical restore');
    expect(mixed.stderr).toContain('usage: pgkeep restore --pgdata DIR');
    const help = await h.pgkeep(['restore', '--help']);
    expect(help.stdout).not.toContain('docs/');
    expect((await h.pgkeep(['restore', '--pgdata', 'x', '--help'])).stdout).toContain('--target-time T');
  });

  it('a backup pruned from ingest: restore names it and --from, and restores it --from a target', async () => {
    const list = JSON.parse((await h.pgkeep(['list', '--json'])).stdout) as {
      backupId: string;
      kind: string;
    }[];
    const id = list.filter((b) => b.kind === 'logical').at(-1)?.backupId as string;
    // The target: a whole copy of the repository, as replication leaves it. Then ingest lets the backup go.
    const target = join(h.dir, 'target-repo');
    await cp(h.repoDir, target, { recursive: true });
    if (h.user) execFileSync('chown', ['-R', `${h.user.uid}:${h.user.gid}`, target]);
    const pruned: string[] = [];
    for (const backupId of [id, baseId]) {
      const path = join(h.repoDir, manifestKey('opmain', backupId));
      const manifest = JSON.parse(await readFile(path, 'utf8')) as { objects: { key: string }[] };
      pruned.push(...manifest.objects.map((o) => o.key), manifestKey('opmain', backupId));
    }
    for (const key of pruned) await rm(join(h.repoDir, key));
    try {
      const gone = await h.pgkeep(['restore', '--db', 'shop', '--into', 'x', '--backup', id]);
      expect(gone.code).toBe(1);
      expect(gone.stderr).toContain(`no backup ${id} of cluster "opmain"`);
      expect(gone.stderr).toContain('restore it from a target with --from TARGET');
      const restored = await h.pgkeep(
        [
          'restore',
          '--db',
          'shop',
          '--into',
          'shop_from_target',
          '--backup',
          id,
          '--from',
          `file://${target}`,
        ],
        primary.env,
      );
      expect(restored.stderr).toBe('');
      expect(restored.stdout).toContain(id);
      expect(await primary.sql('select count(*) from t', 'shop_from_target')).toMatch(/^[1-9]/);
      // A physical restore --from lays the base backup down from the target and fetches WAL from there.
      const pgdata = join(h.dir, 'from-target');
      const physical = await h.pgkeep([
        'restore',
        '--pgdata',
        pgdata,
        '--backup',
        baseId,
        '--from',
        `file://${target}`,
      ]);
      expect(physical.stderr).toBe('');
      const conf = await readFile(join(pgdata, 'postgresql.auto.conf'), 'utf8');
      expect(conf).toMatch(new RegExp(`restore_command = .*PGKEEP_REPOSITORY=\\S*file://${target}`));
      await rm(pgdata, { recursive: true, force: true });
    } finally {
      for (const key of pruned) await cp(join(target, key), join(h.repoDir, key));
    }
  });

  it('refuses target times it cannot read exactly, and targets past the newest archived WAL', async () => {
    const dir = join(h.dir, 'never');
    const vague = await h.pgkeep(['restore', '--pgdata', dir, '--target-time', 'yesterday 3pm']);
    expect(vague.code).toBe(2);
    expect(vague.stderr).toContain('is not a time with a zone: use ISO 8601 with a zone');
    const zoneless = await h.pgkeep(['restore', '--pgdata', dir, '--target-time', '2026-11-29 10:00:00']);
    expect(zoneless.code).toBe(2);
    expect(zoneless.stderr).toContain('has no time zone');
    const future = new Date(Date.now() + 3_600_000).toISOString();
    const late = await h.pgkeep(['restore', '--pgdata', dir, '--target-time', future]);
    expect(late.code).toBe(1);
    expect(late.stderr).toMatch(
      /is not before the newest archived WAL: segment [0-9A-F]{24} \(timeline 1\) was stored at/,
    );
    await expect(stat(dir)).rejects.toThrow();
  });

  it('restoring as root gives the files to the owner of the parent directory', async () => {
    if (process.getuid?.() !== 0 || !h.user) return;
    const dir = join(h.dir, 'as-root');
    const result = await runPgkeep(['restore', '--pgdata', dir, '--backup', baseId], {
      PGKEEP_CONFIG: h.configPath,
    });
    expect(result.stderr).toBe('');
    expect(result.stdout).toContain(`files owned by uid ${h.user.uid} (the owner of ${h.dir})`);
    for (const path of [dir, join(dir, 'PG_VERSION'), join(dir, 'global', 'pg_control')]) {
      expect((await stat(path)).uid).toBe(h.user.uid);
    }
  });

  it('info shows the recoverable window, sizes, gaps and that nothing was verified', async () => {
    const text = await h.pgkeep(['info']);
    expect(text.stderr).toBe('');
    expect(text.stdout).toMatch(/timeline 1: recoverable from \S+ \(start of base backup /);
    expect(text.stdout).toContain('last verification: never');
    const json = JSON.parse((await h.pgkeep(['info', '--json'])).stdout);
    expect(json.timelines[0]).toMatchObject({ timeline: 1, recoverableFrom: { backupId: baseId }, gaps: [] });
    const base = json.backups.find((b: { backupId: string }) => b.backupId === baseId);
    expect(base.storedBytes).toBeGreaterThan(0);
    expect(base.plaintextBytes).toBeGreaterThan(base.storedBytes);
    expect(json.lastVerification).toBeNull();

    // Remove one segment from the middle of the archive: info reports it as a gap.
    const walDir = join(h.repoDir, 'v1', 'opmain', 'wal', '00000001');
    const names = (await readdir(walDir)).filter((n) => /^[0-9A-F]{24}-/.test(n)).sort();
    const victim = names[names.length - 2] as string;
    await rm(join(walDir, victim));
    const gapped = JSON.parse((await h.pgkeep(['info', '--json'])).stdout);
    expect(gapped.timelines[0].gaps).toEqual([
      { from: victim.slice(0, 24), to: victim.slice(0, 24), missingSegments: 1 },
    ]);
  });
});

describe('check', () => {
  it('proves archiving end to end with --archive', async () => {
    const result = await h.pgkeep(['check', '--json', '--archive'], primary.env);
    const checks = JSON.parse(result.stdout) as { name: string; ok: boolean; detail: string }[];
    // Only the segment the info test removed from the archive fails: --archive walks it for gaps.
    expect(checks.filter((c) => !c.ok).map((c) => c.name)).toEqual(['archive gaps, timeline 1']);
    expect(checks.map((c) => c.name)).toEqual(
      expect.arrayContaining([
        'archiving',
        'archive push',
        'spool',
        'replication',
        'identity matches a recipient',
      ]),
    );
    expect(checks.find((c) => c.name === 'archive push')?.detail).toMatch(
      /^segment [0-9A-F]{24} archived in/,
    );
    expect(result.code).toBe(1);
  });

  it('fails for an identity that matches no recipient and for a cluster name archive_command does not use', async () => {
    const other = join(h.dir, 'other-identity.txt');
    await writeFile(other, `${await generateX25519Identity()}\n`, { mode: 0o600 });
    if (h.user)
      await import('node:fs/promises').then((fs) => fs.chown(other, h.user?.uid ?? 0, h.user?.gid ?? 0));
    const result = await h.pgkeep(['check', '--json'], {
      ...primary.env,
      PGKEEP_IDENTITY: other,
      PGKEEP_CLUSTER: 'opelse',
    });
    expect(result.code).toBe(1);
    const failed = Object.fromEntries(
      (JSON.parse(result.stdout) as { name: string; ok: boolean; detail: string }[])
        .filter((c) => !c.ok)
        .map((c) => [c.name, c.detail]),
    );
    expect(failed['identity matches a recipient']).toContain('matches none of the 1 configured recipient(s)');
    expect(failed.archiving).toContain(
      'archive_command archives under cluster "opmain" but this configuration names "opelse"',
    );
  });
});

describe('configuration errors name their source', () => {
  it('a missing config file is reported as missing, and a bad PGKEEP_CLUSTER is blamed, not the file', async () => {
    const missing = await runPgkeep(['list'], {});
    expect(missing.code).toBe(3);
    expect(missing.stderr).toContain('config file /etc/pgkeep/pgkeep.yaml does not exist');
    const bad = await runPgkeep(['list'], { PGKEEP_CONFIG: h.configPath, PGKEEP_CLUSTER: 'Bad_Name' });
    expect(bad.code).toBe(3);
    expect(bad.stderr).toContain(
      'config (PGKEEP_CLUSTER in the environment): cluster: invalid cluster name "Bad_Name"',
    );
  });
});

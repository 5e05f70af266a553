import { execFile, spawn } from 'node:child_process';
import { realpathSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderAgentUnit } from '../../../agent/systemd/unit.ts';
import { archiveCommandLine, WalSpool } from '../../../agent/wal/spool.ts';
import { prerequisiteProblem } from '../../../scripts/prerequisites.ts';
import { NODE, PGKEEP_BUNDLE } from '../../support/pgkeep-cli.ts';

const execFileAsync = promisify(execFile);
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pgkeep-unit-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('systemd unit', () => {
  const unit = renderAgentUnit({
    nodePath: '/usr/bin/node',
    bundlePath: '/usr/local/lib/pgkeep/pgkeep.mjs',
    pgData: '/var/lib/postgresql/15/main',
    awsCredentialsFile: '/etc/pgkeep/aws-credentials',
  });

  it('is hardened, restarts on failure and takes secrets through LoadCredential', () => {
    for (const line of [
      'ExecStart=/usr/bin/node /usr/local/lib/pgkeep/pgkeep.mjs agent',
      'User=postgres',
      'ProtectSystem=strict',
      'NoNewPrivileges=yes',
      'PrivateTmp=yes',
      'ReadWritePaths=/var/lib/pgkeep',
      'StateDirectory=pgkeep',
      'Restart=on-failure',
      'KillSignal=SIGTERM',
      'LoadCredential=aws-credentials:/etc/pgkeep/aws-credentials',
      'Environment=AWS_SHARED_CREDENTIALS_FILE=%d/aws-credentials',
      'Environment=PGDATA=/var/lib/postgresql/15/main',
      'CapabilityBoundingSet=',
    ]) {
      expect(unit.split('\n')).toContain(line);
    }
    // V8's JIT needs writable-executable memory.
    expect(unit).not.toContain('MemoryDenyWriteExecute=yes');
  });

  it('passes systemd-analyze verify', async () => {
    const path = join(dir, 'pgkeep-agent.service');
    await writeFile(
      path,
      renderAgentUnit({ nodePath: NODE, bundlePath: PGKEEP_BUNDLE, pgData: '/var/lib/postgresql/15/main' }),
    );
    expect(
      prerequisiteProblem('systemd-analyze'),
      'systemd-analyze checks the unit as systemd would',
    ).toBeUndefined();
    const result = await execFileAsync('systemd-analyze', ['verify', path]).catch(
      (e: { stderr: string; code: number }) => e,
    );
    // Without a running systemd (containers), verify still parses the unit and reports unknown directives.
    expect(result.stderr ?? '').not.toMatch(/Unknown (key|section)|Invalid|Failed to parse/i);
  });

  it('refuses paths a unit cannot hold', () => {
    expect(() => renderAgentUnit({ nodePath: 'node', bundlePath: '/x/pgkeep.mjs' })).toThrow(/absolute/);
    expect(() =>
      renderAgentUnit({ nodePath: '/usr/bin/node', bundlePath: '/x/pgkeep.mjs', spoolDir: '/srv/spool' }),
    ).toThrow(/outside \/var\/lib\/pgkeep/);
  });

  it('prints the unit and the archive_command line from the installed paths', async () => {
    const pgdata = join(dir, 'pg');
    await mkdir(pgdata);
    await writeFile(join(pgdata, 'PG_VERSION'), '15\n');
    const { stdout } = await execFileAsync(NODE, [PGKEEP_BUNDLE, 'systemd-unit', '--pgdata', pgdata]);
    expect(stdout).toContain(`ExecStart=${realpathSync(NODE)} ${PGKEEP_BUNDLE} agent`);
    expect(stdout).toContain(`Environment=PGDATA=${pgdata}`);
    const line = await execFileAsync(NODE, [
      PGKEEP_BUNDLE,
      'systemd-unit',
      '--archive-command',
      '--cluster',
      'main',
    ]);
    // The spool of the data directory archive_command runs in (its working directory).
    expect(line.stdout).toMatch(
      /^archive_command = 'cd -P \.;S=\/var\/lib\/pgkeep\/spool;R="\$S"\/main\/pgdata"\$PWD";/,
    );
    expect(line.stdout).toContain('wal-push "$W"');
  });

  it('builds an archive_command whose fast paths need no Node', async () => {
    const spoolDir = join(dir, "sp'ool");
    const dataDir = join(dir, 'pgdata');
    await mkdir(dataDir, { recursive: true });
    const line = archiveCommandLine({
      nodePath: '/bin/echo',
      bundlePath: '/opt/pgkeep.mjs',
      spoolDir,
      cluster: 'main',
    });
    const spool = new WalSpool(spoolDir, 'main', dataDir);
    const run = async (command: string) =>
      await execFileAsync('sh', ['-c', command.replaceAll('%p', 'pg_wal/seg').replaceAll('%f', 'seg')], {
        cwd: dataDir,
      });
    await mkdir(join(dataDir, 'pg_wal'));
    await writeFile(join(dataDir, 'pg_wal', 'seg'), 'x');
    // No marker, no agent: falls through to Node (here /bin/echo prints the invocation).
    expect((await run(line)).stdout).toBe('/opt/pgkeep.mjs wal-push pg_wal/seg\n');
    // A marker newer than the segment: exits 0 without running anything.
    await mkdir(spool.pushedDir, { recursive: true });
    await writeFile(spool.markerPath('seg'), '{}');
    expect((await run(line)).stdout).toBe('');
    // The segment changed after the marker was written: not trusted.
    await new Promise((r) => setTimeout(r, 20));
    await writeFile(join(dataDir, 'pg_wal', 'seg'), 'y');
    expect((await run(line)).stdout).toContain('wal-push');
    // A live agent (this process's pid) that claimed the segment and writes its marker while
    // archive_command waits.
    await rm(spool.markerPath('seg'));
    await writeFile(spool.agentPidFile, String(process.pid));
    await spool.claim('seg');
    setTimeout(() => void writeFile(spool.markerPath('seg'), '{}'), 300);
    const started = Date.now();
    expect((await run(line)).stdout).toBe('');
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    // A live agent that does not claim the segment (it does not push it): no 10 s wait.
    await rm(spool.markerPath('seg'));
    await spool.unclaim('seg');
    const unclaimed = Date.now();
    expect((await run(line)).stdout).toContain('wal-push');
    expect(Date.now() - unclaimed).toBeLessThan(1_500);
    // Another data directory's agent and markers are not this one's.
    const other = new WalSpool(spoolDir, 'main', join(dir, 'other'));
    await mkdir(other.pushedDir, { recursive: true });
    await writeFile(other.markerPath('seg'), '{}');
    expect((await run(line)).stdout).toContain('wal-push');
    // A pid file naming a zombie (a holder killed and never reaped) is no agent: no 10 s wait.
    await rm(spool.markerPath('seg'), { force: true });
    const parent = spawn('sh', ['-c', 'true & echo $!; exec sleep 5'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    try {
      const zombie = await new Promise<string>((r) =>
        parent.stdout?.once('data', (d: Buffer) => r(d.toString())),
      );
      await writeFile(spool.agentPidFile, zombie.trim());
      await spool.claim('seg');
      await new Promise((r) => setTimeout(r, 200)); // let the child exit
      const tried = Date.now();
      expect((await run(line)).stdout).toContain('wal-push');
      expect(Date.now() - tried).toBeLessThan(2_000);
    } finally {
      parent.kill('SIGKILL');
    }
  });
});

import { execFile, spawn } from 'node:child_process';
import { realpathSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderAgentUnit } from '../../../agent/systemd/unit.ts';
import { archiveCommandLine } from '../../../agent/wal/spool.ts';
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
    expect(line.stdout).toMatch(/^archive_command = 'M=''\/var\/lib\/pgkeep\/spool\/main\/pushed''\/%f; /);
    expect(line.stdout).toContain('wal-push %p');
  });

  it('builds an archive_command whose fast paths need no Node', async () => {
    const spool = join(dir, "sp'ool");
    const line = archiveCommandLine({
      nodePath: '/bin/echo',
      bundlePath: '/opt/pgkeep.mjs',
      spoolDir: spool,
      cluster: 'main',
    });
    const run = async (command: string) =>
      await execFileAsync('sh', ['-c', command.replaceAll('%p', join(dir, 'seg')).replaceAll('%f', 'seg')]);
    await writeFile(join(dir, 'seg'), 'x');
    // No marker, no agent: falls through to Node (here /bin/echo prints the invocation).
    expect((await run(line)).stdout).toBe(`/opt/pgkeep.mjs wal-push ${join(dir, 'seg')}\n`);
    // A marker newer than the segment: exits 0 without running anything.
    await mkdir(join(spool, 'main', 'pushed'), { recursive: true });
    await writeFile(join(spool, 'main', 'pushed', 'seg'), '{}');
    expect((await run(line)).stdout).toBe('');
    // The segment changed after the marker was written: not trusted.
    await new Promise((r) => setTimeout(r, 20));
    await writeFile(join(dir, 'seg'), 'y');
    expect((await run(line)).stdout).toContain('wal-push');
    // A live agent (this process's pid) that writes the marker while archive_command waits.
    await rm(join(spool, 'main', 'pushed', 'seg'));
    await writeFile(join(spool, 'main', 'agent.pid'), String(process.pid));
    setTimeout(() => void writeFile(join(spool, 'main', 'pushed', 'seg'), '{}'), 300);
    const started = Date.now();
    expect((await run(line)).stdout).toBe('');
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    // A pid file naming a zombie (a holder killed and never reaped) is no agent: no 10 s wait.
    await rm(join(spool, 'main', 'pushed', 'seg'));
    const parent = spawn('sh', ['-c', 'true & echo $!; exec sleep 5'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    try {
      const zombie = await new Promise<string>((r) =>
        parent.stdout?.once('data', (d: Buffer) => r(d.toString())),
      );
      await writeFile(join(spool, 'main', 'agent.pid'), zombie.trim());
      await new Promise((r) => setTimeout(r, 200)); // let the child exit
      const tried = Date.now();
      expect((await run(line)).stdout).toContain('wal-push');
      expect(Date.now() - tried).toBeLessThan(2_000);
    } finally {
      parent.kill('SIGKILL');
    }
  });
});

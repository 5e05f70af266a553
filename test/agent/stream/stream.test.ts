/**
 * `pgkeep stream`: any command's output backed up and restored end to end through the bundled CLI,
 * into a file:// repository and a real S3-compatible server (s3rver) on 127.0.0.1, plus the restore
 * script with the databasebackup contract's interface (`snapshots`, `restore latest`).
 */
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { referenceKeyPairs } from '../../support/age-keys.ts';
import { runPgkeep } from '../../support/pgkeep-cli.ts';
import { S3RVER_CREDENTIALS, type S3Server, startS3Server } from '../../support/s3-server.ts';

const execFileAsync = promisify(execFile);
const MARKER = 'pgkeep-stream-marker-4d1c8b2e';
const SIZE = 200_000_000;
/** 200 MB that do not compress (AES-CTR of zeros), after a marker: the same bytes every run. */
const PRODUCER = `printf '%s' ${MARKER}; head -c ${SIZE} /dev/zero | openssl enc -aes-128-ctr -nosalt -K 000102030405060708090a0b0c0d0e0f -iv 00000000000000000000000000000000`;

let work: string;
let repo: string;
let spool: string;
let agentTmp: string;
let identityFile: string;
let recipient: string;
let s3: S3Server;

function envFor(repository: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    PGKEEP_CONFIG: join(work, 'empty.yaml'),
    PGKEEP_CLUSTER: 'nixhost',
    PGKEEP_REPOSITORY: repository,
    PGKEEP_RECIPIENTS: recipient,
    PGKEEP_IDENTITY: identityFile,
    PGKEEP_SPOOL_DIR: spool,
    TMPDIR: agentTmp,
    AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
    ...extra,
  };
}

async function sha256Of(shell: string): Promise<string> {
  const { stdout } = await execFileAsync('sh', ['-c', `{ ${shell}; } | sha256sum`], { maxBuffer: 1 << 20 });
  return stdout.split(' ')[0] ?? '';
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true }).catch(() => [])) {
    if (entry.isFile()) out.push(join(entry.parentPath, entry.name));
  }
  return out;
}

/** True when `marker` occurs in any file under `dir` (read in full: the files here are small or ciphertext). */
async function markerUnder(dir: string, marker: string): Promise<string | undefined> {
  for (const file of await filesUnder(dir)) {
    if ((await readFile(file)).includes(marker)) return file;
  }
  return undefined;
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pgkeep-stream-'));
  repo = join(work, 'repo');
  spool = join(work, 'spool');
  agentTmp = join(work, 'tmp');
  await Promise.all([mkdir(repo), mkdir(spool), mkdir(agentTmp)]);
  await writeFile(join(work, 'empty.yaml'), '{}\n');
  const { hybrid } = await referenceKeyPairs();
  recipient = hybrid.recipient;
  identityFile = join(work, 'identity.txt');
  await writeFile(identityFile, `${hybrid.identity}\n`, { mode: 0o600 });
  s3 = await startS3Server({ buckets: ['ingest'] });
});

afterAll(async () => {
  await s3?.stop();
  await rm(work, { recursive: true, force: true });
});

describe('pgkeep stream', () => {
  it("backs up a command's 200 MB and restores them into another command, byte for byte, with no plaintext on disk", async () => {
    const url = `file://${repo}`;
    const taken = await runPgkeep(
      ['stream', 'backup', '--name', 'app.sql', '--', 'sh', '-c', PRODUCER],
      envFor(url),
    );
    expect(taken.stderr).toBe('');
    expect(taken.code).toBe(0);
    expect(taken.stdout).toMatch(/^stream backup \d{8}T\d{6}Z-[0-9a-f]{4} of "app.sql": 190\.7 MiB read/);

    const out = join(work, 'restored.sha256');
    const restored = await runPgkeep(
      ['stream', 'restore', '--name', 'app.sql', '--', 'sh', '-c', `sha256sum > ${out}`],
      envFor(url),
    );
    expect(restored.code).toBe(0);
    expect((await readFile(out, 'utf8')).split(' ')[0]).toBe(await sha256Of(PRODUCER));

    const snapshots = await runPgkeep(['stream', 'snapshots', '--name', 'app.sql', '--json'], envFor(url));
    const rows = JSON.parse(snapshots.stdout) as { backupId: string; plaintextSizeBytes: number }[];
    expect(rows.map((r) => r.plaintextSizeBytes)).toEqual([SIZE + MARKER.length]);
    // A stream backup is a backup like the others: `list` shows it, and the manifest is last.
    const list = JSON.parse((await runPgkeep(['list', '--json'], envFor(url))).stdout) as { kind: string }[];
    expect(list.map((b) => b.kind)).toEqual(['stream']);

    // Nothing plaintext anywhere: not in the repository, the agent's TMPDIR, or the spool.
    expect(await markerUnder(repo, MARKER)).toBeUndefined();
    expect(await filesUnder(agentTmp)).toEqual([]);
    expect(await markerUnder(spool, MARKER)).toBeUndefined();
  });

  it('keeps nothing when the command fails half-way: no manifest, no object, no open upload', async () => {
    const url = s3.url('ingest', 'failing');
    const failed = await runPgkeep(
      ['stream', 'backup', '--name', 'half', '--', 'sh', '-c', 'head -c 30000000 /dev/urandom; exit 3'],
      envFor(url),
    );
    expect(failed.code).toBe(1);
    expect(failed.stderr).toContain(
      'backup command "sh -c head -c 30000000 /dev/urandom; exit 3" exited with code 3',
    );
    const snapshots = await runPgkeep(['stream', 'snapshots', '--name', 'half'], envFor(url));
    expect(snapshots.stdout).toBe('no stream backups named "half"\n');
    const { stdout } = await execFileAsync('find', [s3.directory, '-path', '*failing*', '-type', 'f']);
    expect(stdout.split('\n').filter((f) => !f.endsWith('._S3rver_metadata.json') && f !== '')).toEqual([]);
    expect(await s3.openUploads('ingest')).toEqual([]);
  });

  it('reports failure when the restore command fails, and when the stored object was tampered with', async () => {
    const url = `file://${repo}-tamper`;
    await mkdir(`${repo}-tamper`);
    expect(
      (
        await runPgkeep(
          ['stream', 'backup', '--name', 'small', '--', 'sh', '-c', 'seq 1 200000'],
          envFor(url),
        )
      ).code,
    ).toBe(0);

    const refused = await runPgkeep(
      ['stream', 'restore', '--name', 'small', '--', 'sh', '-c', 'head -c 100 >/dev/null; exit 4'],
      envFor(url),
    );
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('exited with code 4');

    const [object] = (await filesUnder(`${repo}-tamper`)).filter((f) => f.endsWith('stream.zst.age'));
    if (!object) throw new Error('the stream object was not stored');
    const bytes = await readFile(object);
    bytes[bytes.length - 100] = (bytes[bytes.length - 100] ?? 0) ^ 1;
    await writeFile(object, bytes);
    const damaged = await runPgkeep(
      ['stream', 'restore', '--name', 'small', '--', 'sh', '-c', 'cat >/dev/null'],
      envFor(url),
    );
    expect(damaged.code).toBe(5);
    expect(damaged.stderr).toMatch(
      /object v1\/nixhost\/stream\/small\/.*\/stream\.zst\.age failed verification/,
    );

    const unknown = await runPgkeep(
      ['stream', 'restore', '--name', 'small', '--backup', '20200101T000000Z-0000', '--', 'cat'],
      envFor(url),
    );
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('no backup 20200101T000000Z-0000 in cluster "nixhost"');
    const badName = await runPgkeep(['stream', 'snapshots', '--name', '../etc'], envFor(url));
    expect(badName.code).toBe(2);
    expect(badName.stderr).toContain('--name "../etc": use 1-100 letters');
  });

  it('writes a restore script with the databasebackup interface: snapshots, restore latest', async () => {
    const url = `file://${repo}-script`;
    await mkdir(`${repo}-script`);
    for (const n of [1, 2])
      expect(
        (
          await runPgkeep(
            ['stream', 'backup', '--name', 'db', '--', 'sh', '-c', `echo backup-${n}`],
            envFor(url),
          )
        ).code,
      ).toBe(0);
    const out = join(work, 'script-restored.txt');
    const generated = await runPgkeep(
      ['stream', 'restore-script', '--name', 'db', '--', 'sh', '-c', `cat > ${out}`],
      envFor(url),
    );
    expect(generated.code).toBe(0);
    const script = join(work, 'pgkeep-restore-db');
    await writeFile(script, generated.stdout);
    await chmod(script, 0o755);
    const env = { ...process.env, ...envFor(url) };

    const { stdout } = await execFileAsync(script, ['snapshots'], { env });
    const ids = stdout
      .trim()
      .split('\n')
      .map((line) => line.split(' ')[0]);
    expect(ids).toHaveLength(2);
    await execFileAsync(script, ['restore', 'latest'], { env });
    expect(await readFile(out, 'utf8')).toBe('backup-2\n');
    await execFileAsync(script, ['restore', ids[0] ?? ''], { env });
    expect(await readFile(out, 'utf8')).toBe('backup-1\n');
    await expect(execFileAsync(script, ['restore'], { env })).rejects.toMatchObject({ code: 2 });
  });
});

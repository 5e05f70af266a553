import { chmod, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as age from 'age-encryption';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, requireRecipients } from '../../agent/config.ts';
import { encryptBuffer } from '../../core/age-stream.ts';
import { recipientPayload } from '../../core/recipient-payload.ts';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pgkeep-config-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function configFile(content: string): Promise<string> {
  const path = join(dir, `c${Math.random().toString(16).slice(2)}.yaml`);
  await writeFile(path, content);
  return path;
}

const minimal = { PGKEEP_CLUSTER: 'main', PGKEEP_REPOSITORY: 'file:///var/backups' };

describe('loadConfig', () => {
  it('reads the file and lets the environment win', async () => {
    const path = await configFile('cluster: from-file\nrepository: file:///a\nwal:\n  pushParallelism: 2\n');
    const config = await loadConfig({
      configPath: path,
      env: {
        PGKEEP_CLUSTER: 'from-env',
        PGKEEP_WAL_PUSH_PARALLELISM: '8',
        PGKEEP_RECIPIENTS: 'age1a, age1b',
      },
    });
    expect(config.cluster).toBe('from-env');
    expect(config.repository).toBe('file:///a');
    expect(config.wal.pushParallelism).toBe(8);
    expect(config.recipients).toEqual(['age1a', 'age1b']);
  });

  it('works from the environment alone when the default file is absent', async () => {
    const config = await loadConfig({ configPath: undefined, env: minimal });
    expect(config.zstdLevel).toBe(1);
    expect(config.metrics.listen).toBe('127.0.0.1:9187');
    expect(config.wal.asyncSeconds).toBe(60);
  });

  it('takes wal.asyncSeconds from PGKEEP_WAL_ASYNC_SECONDS, fractions and 0 (off) included', async () => {
    for (const [raw, seconds] of [
      ['0', 0],
      ['1.5', 1.5],
      ['300', 300],
    ] as const) {
      const config = await loadConfig({
        configPath: undefined,
        env: { ...minimal, PGKEEP_WAL_ASYNC_SECONDS: raw },
      });
      expect(config.wal.asyncSeconds).toBe(seconds);
    }
    await expect(
      loadConfig({ configPath: undefined, env: { ...minimal, PGKEEP_WAL_ASYNC_SECONDS: '-1' } }),
    ).rejects.toThrow(/wal\.asyncSeconds: .*>=0.*\(or set PGKEEP_WAL_ASYNC_SECONDS\)/);
  });

  it.each([
    [
      'an unknown top-level option',
      'cluster: a\nrepository: file:///x\nrecipent: age1x\n',
      /unknown option "recipent"; known options: cluster, repository, recipients/,
    ],
    [
      'an unknown nested option',
      'cluster: a\nrepository: file:///x\nwal:\n  parallel: 3\n',
      /unknown option "parallel" in wal; known options: pushParallelism/,
    ],
    [
      'a missing required option',
      'repository: file:///x\n',
      /cluster is required: set it in the config file \(or set PGKEEP_CLUSTER\)/,
    ],
    [
      'a wrong type',
      'cluster: a\nrepository: file:///x\nzstdLevel: fast\n',
      /zstdLevel: .*number.*\(or set PGKEEP_ZSTD_LEVEL\)/,
    ],
    ['an out-of-range value', 'cluster: a\nrepository: file:///x\nzstdLevel: 40\n', /zstdLevel: .*19/],
    [
      'a bad cron expression',
      'cluster: a\nrepository: file:///x\nschedules:\n  base: every day\n',
      /schedules\.base: not a valid cron expression/,
    ],
    ['a bad cluster name', 'cluster: Main DB\nrepository: file:///x\n', /invalid cluster name "Main DB"/],
    ['invalid YAML', 'cluster: [a\n', /not valid YAML/],
    ['a list at the top level', '- a\n- b\n', /expected a mapping/],
  ])('names the problem for %s', async (_what, content, message) => {
    const path = await configFile(content);
    const error = await loadConfig({ configPath: path, env: {} }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toMatch(message);
  });

  it('requires an explicitly named file to exist', async () => {
    await expect(loadConfig({ configPath: join(dir, 'nope.yaml'), env: {} })).rejects.toThrow(
      /config file .*nope\.yaml does not exist/,
    );
    await expect(
      loadConfig({ configPath: undefined, env: { PGKEEP_CONFIG: join(dir, 'nope.yaml') } }),
    ).rejects.toThrow(/does not exist/);
  });

  it('refuses to go on without a recipient, saying how to make one', async () => {
    const config = await loadConfig({ configPath: undefined, env: minimal });
    expect(() => requireRecipients(config)).toThrow(/no recipient configured.*pgkeep keygen/);
  });

  it('reuses a validation kept in the spool only while the file, the environment and the program are unchanged', async () => {
    const spool = await mkdtemp(join(dir, 'spool-'));
    const path = await configFile('cluster: a\nrepository: file:///a\n');
    const env = { PGKEEP_SPOOL_DIR: spool };
    expect((await loadConfig({ configPath: path, env })).cluster).toBe('a');
    const [cacheName] = await readdir(join(spool, 'config-cache'));
    const cacheFile = join(spool, 'config-cache', cacheName as string);

    // Mark the cached entry: a load that returns the mark read the cache instead of validating.
    const entry = JSON.parse(await readFile(cacheFile, 'utf8'));
    entry.config.cluster = 'marked';
    await writeFile(cacheFile, JSON.stringify(entry));
    expect((await loadConfig({ configPath: path, env })).cluster).toBe('marked');

    // Any change of input is validated afresh.
    expect((await loadConfig({ configPath: path, env: { ...env, PGKEEP_ZSTD_LEVEL: '3' } })).zstdLevel).toBe(
      3,
    );
    await writeFile(path, 'cluster: b\nrepository: file:///a\n');
    expect((await loadConfig({ configPath: path, env })).cluster).toBe('b');
    await writeFile(path, 'cluster: b\nrepository: file:///a\nzstdLevel: 99\n');
    await expect(loadConfig({ configPath: path, env })).rejects.toThrow(/zstdLevel/);
  });

  it('keeps the recipients decoded beside the validation, and encrypts to what it kept', async () => {
    const spool = await mkdtemp(join(dir, 'spool-'));
    const [mine, other] = await Promise.all([age.generateX25519Identity(), age.generateX25519Identity()]);
    const recipient = await age.identityToRecipient(mine);
    const path = await configFile(`cluster: a\nrepository: file:///a\nrecipients: ["${recipient}"]\n`);
    const env = { PGKEEP_SPOOL_DIR: spool };
    await loadConfig({ configPath: path, env });
    const cacheFile = join(spool, 'config-cache', (await readdir(join(spool, 'config-cache')))[0] as string);
    const entry = JSON.parse(await readFile(cacheFile, 'utf8'));
    expect(entry.recipientPayloads).toEqual([recipientPayload(recipient)]);

    // Another key in the kept entry: a load from the cache takes it as the recipient's keys, unparsed.
    entry.recipientPayloads = [recipientPayload(await age.identityToRecipient(other))];
    await writeFile(cacheFile, JSON.stringify(entry));
    const config = await loadConfig({ configPath: path, env });
    const sealed = encryptBuffer(requireRecipients(config), Buffer.from('segment'));
    const decrypter = new age.Decrypter();
    decrypter.addIdentity(other);
    expect(await decrypter.decrypt(sealed, 'text')).toBe('segment');
  });

  it('does not trust a kept validation that another user could have written', async () => {
    const spool = await mkdtemp(join(dir, 'spool-'));
    const path = await configFile('cluster: a\nrepository: file:///a\n');
    const env = { PGKEEP_SPOOL_DIR: spool };
    await loadConfig({ configPath: path, env });
    const cacheDir = join(spool, 'config-cache');
    const cacheFile = join(cacheDir, (await readdir(cacheDir))[0] as string);
    const mark = async () => {
      const entry = JSON.parse(await readFile(cacheFile, 'utf8'));
      entry.config.cluster = 'marked';
      await writeFile(cacheFile, JSON.stringify(entry));
    };
    await mark();
    await chmod(cacheDir, 0o777);
    // Validated afresh (and kept again, a new file of mode 0600).
    expect((await loadConfig({ configPath: path, env })).cluster).toBe('a');
    await chmod(cacheDir, 0o700);
    await mark();
    await chmod(cacheFile, 0o620);
    expect((await loadConfig({ configPath: path, env })).cluster).toBe('a');
    // Private again: the kept entry is used (the check can pass).
    await mark();
    expect((await loadConfig({ configPath: path, env })).cluster).toBe('marked');
  });

  it('still loads when the spool cannot hold the cache', async () => {
    const notADirectory = await configFile('');
    const path = await configFile('cluster: a\nrepository: file:///a\n');
    const config = await loadConfig({ configPath: path, env: { PGKEEP_SPOOL_DIR: notADirectory } });
    expect(config.cluster).toBe('a');
  });
});

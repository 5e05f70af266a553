// The deploy config: the example is valid, and each class of mistake fails with its own message
// naming the field, both from the parser and from `cdk synth` itself.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { App } from 'aws-cdk-lib';
import { afterAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import {
  DEFAULT_DEPLOY_CONFIG_PATH,
  DeployConfigError,
  loadDeployConfig,
  parseDeployConfig,
  validateDeployConfig,
} from '../../cdk/config.ts';
import { deployConfigPath } from '../../cdk/pgkeep-app.ts';

const example = parse(readFileSync(DEFAULT_DEPLOY_CONFIG_PATH, 'utf8')) as Record<string, unknown>;
const dir = mkdtempSync(path.join(tmpdir(), 'pgkeep-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// biome-ignore lint/suspicious/noExplicitAny: the cases edit arbitrary paths of a parsed YAML document
type Doc = Record<string, any>;

/** The example with one change applied. */
function variant(change: (c: Doc) => void): Record<string, unknown> {
  const copy = structuredClone(example) as Doc;
  change(copy);
  return copy;
}

function errorOf(value: unknown): DeployConfigError {
  try {
    validateDeployConfig(value, 'test.yaml');
  } catch (error) {
    if (error instanceof DeployConfigError) return error;
    throw error;
  }
  throw new Error('expected the config to be rejected');
}

describe('the example config', () => {
  it('is valid and fills the defaults', () => {
    const config = loadDeployConfig(DEFAULT_DEPLOY_CONFIG_PATH);
    expect(config.name).toBe('pgkeep');
    expect(config.clusters).toEqual([{ name: 'main', hostAssumedBy: 'ec2' }]);
    expect(config.targets.map((t) => t.type)).toEqual(['aws-s3', 's3-compatible']);
    expect(config.targets[0]?.retention.minimumKeep).toBe(1);
    expect(config.schedules.timeZone).toBe('UTC');
    expect(config.ingest.keepDays).toBe(30);
  });

  it('is what synth reads unless the context or the environment names another file', () => {
    expect(deployConfigPath(new App(), {})).toBe(DEFAULT_DEPLOY_CONFIG_PATH);
    expect(deployConfigPath(new App(), { PGKEEP_DEPLOY_CONFIG: 'a.yaml' })).toBe('a.yaml');
    expect(
      deployConfigPath(new App({ context: { pgkeepConfig: 'b.yaml' } }), { PGKEEP_DEPLOY_CONFIG: 'a.yaml' }),
    ).toBe('b.yaml');
  });
});

describe('each class of bad config has its own error naming the field', () => {
  const cases: [string, (c: Doc) => void, string, RegExp][] = [
    ['no clusters', (c) => (c.clusters = []), 'clusters', /at least one cluster/],
    [
      'a cluster name that cannot be a key prefix',
      (c) => (c.clusters[0].name = 'Main_DB'),
      'clusters.0.name',
      /invalid cluster name "Main_DB"/,
    ],
    [
      'two clusters with one name',
      (c) => c.clusters.push({ name: 'main' }),
      'clusters.1.name',
      /duplicate cluster name "main"/,
    ],
    [
      'a host trust that does not exist',
      (c) => (c.clusters[0].hostAssumedBy = 'lambda'),
      'clusters.0.hostAssumedBy',
      /ec2|account/,
    ],
    [
      'an unknown Object Lock mode',
      (c) => (c.ingest.objectLock.mode = 'STRICT'),
      'ingest.objectLock.mode',
      /GOVERNANCE|COMPLIANCE/,
    ],
    [
      'a zero-day lock',
      (c) => (c.ingest.objectLock.defaultRetentionDays = 0),
      'ingest.objectLock.defaultRetentionDays',
      />=1|at least|too small/i,
    ],
    [
      'an ingest window no longer than the Object Lock',
      (c) => (c.ingest.keepDays = c.ingest.objectLock.defaultRetentionDays),
      'ingest.keepDays',
      /ingest\.keepDays is 14, but a version under Object Lock cannot be deleted before ingest\.objectLock\.defaultRetentionDays \(14\).*at least 15/,
    ],
    [
      'an ingest window without a target to hold what it prunes',
      (c) => (c.targets = []),
      'ingest.keepDays',
      /no targets: ingest holds the only copy.*add a target or remove keepDays/,
    ],
    [
      'an unknown target type',
      (c) => (c.targets[0].type = 'gcs'),
      'targets.0.type',
      /"aws-s3" or "s3-compatible"/,
    ],
    [
      'an S3-compatible target without an endpoint',
      (c) => delete c.targets[1].endpoint,
      'targets.1.endpoint',
      /needs its endpoint/,
    ],
    [
      'a plain-http endpoint',
      (c) => (c.targets[1].endpoint = 'http://s3.example.com'),
      'targets.1.endpoint',
      /https:\/\//,
    ],
    [
      'an AWS target in a region that does not exist',
      (c) => (c.targets[0].region = 'europe'),
      'targets.0.region',
      /not an AWS region/,
    ],
    [
      'an S3-compatible target without its secret name',
      (c) => delete c.targets[1].credentialsSecretName,
      'targets.1.credentialsSecretName',
      /./,
    ],
    [
      'two targets with one name',
      (c) => (c.targets[1].name = 'dr-aws'),
      'targets.1.name',
      /duplicate target name "dr-aws"/,
    ],
    ['a target called ingest', (c) => (c.targets[0].name = 'ingest'), 'targets.0.name', /reserved/],
    [
      'two providers sharing a secret',
      (c) => c.targets.push({ ...c.targets[1], name: 'wasabi' }),
      'targets',
      /secret "pgkeep\/targets\/b2" is used by two targets/,
    ],
    [
      "a delete key stored in the copy key's secret",
      (c) => (c.targets[1].deleteCredentialsSecretName = c.targets[1].credentialsSecretName),
      'targets.1.deleteCredentialsSecretName',
      /must name another secret than credentialsSecretName/,
    ],
    [
      'a negative retention count',
      (c) => (c.targets[0].retention.keepDaily = -1),
      'targets.0.retention.keepDaily',
      />=0|too small/i,
    ],
    [
      'a retention rule with a typo',
      (c) => (c.targets[0].retention.keepDayly = 7),
      'targets.0.retention',
      /unrecognized key.*keepDayly/i,
    ],
    [
      'a schedule that is neither rate nor cron',
      (c) => (c.schedules.replication = 'every 5 minutes'),
      'schedules.replication',
      /is not a schedule/,
    ],
    [
      'a rate with the wrong unit form',
      (c) => (c.schedules.freshness = 'rate(1 minutes)'),
      'schedules.freshness',
      /singular unit/,
    ],
    [
      'a cron without "?"',
      (c) => (c.schedules.retention = 'cron(0 3 * * * *)'),
      'schedules.retention',
      /"\?" in day-of-month or day-of-week/,
    ],
    [
      'no PostgreSQL versions to verify',
      (c) => (c.verification.postgresMajorVersions = []),
      'verification.postgresMajorVersions',
      /at least one PostgreSQL major version/,
    ],
    [
      'a PostgreSQL version without an image',
      (c) => (c.verification.postgresMajorVersions = [12]),
      'verification.postgresMajorVersions.0',
      />=13|too small/i,
    ],
    [
      'an assertion without a query',
      (c) => delete c.verification.assertions[0].query,
      'verification.assertions.0.query',
      /./,
    ],
    ['no alert email', (c) => (c.alerts.emails = []), 'alerts.emails', /at least one alert email/],
    ['an alert email that is not one', (c) => (c.alerts.emails = ['oncall']), 'alerts.emails.0', /email/i],
    [
      'an operator that is not a role ARN',
      (c) => (c.operatorRoleArn = 'arn:aws:iam::123456789012:user/bob'),
      'operatorRoleArn',
      /not an IAM role ARN/,
    ],
    [
      'an account that is not 12 digits',
      (c) => (c.env = { account: '1234', region: 'eu-west-1' }),
      'env.account',
      /12 digits/,
    ],
    [
      'a stack name too long for the bucket name',
      (c) => (c.name = 'a-very-long-pipeline-name'),
      'name',
      /1-20 lower-case/,
    ],
    ['an unknown top-level field', (c) => (c.alarms = {}), '(root)', /unrecognized key.*alarms/i],
  ];

  it.each(cases)('%s', (_what, change, field, message) => {
    const error = errorOf(variant(change));
    expect(error.field).toBe(field);
    expect(error.message).toContain(`invalid deploy config test.yaml: ${field}: `);
    expect(error.message).toMatch(message);
  });

  it('gives each class a different message', () => {
    const messages = cases.map(([, change]) => errorOf(variant(change)).message);
    expect(messages.filter((m, i) => messages.indexOf(m) !== i)).toEqual([]);
  });

  it('rejects YAML that does not parse, and a missing file, saying how to point at another one', () => {
    expect(() => parseDeployConfig('clusters: [\n', 'broken.yaml')).toThrow(
      /deploy config broken.yaml is not valid YAML/,
    );
    expect(() => loadDeployConfig(path.join(dir, 'missing.yaml'))).toThrow(
      /cannot read deploy config .*missing.yaml: ENOENT; pass another path with -c pgkeepConfig=<file> or PGKEEP_DEPLOY_CONFIG/,
    );
  });
});

describe('cdk synth', () => {
  it('fails on an invalid config with the message naming the field, and nothing else', async () => {
    const file = path.join(dir, 'bad.yaml');
    writeFileSync(file, stringify(variant((c) => (c.targets[1].endpoint = 'http://s3.example.com'))));
    const result = await promisify(execFile)(process.execPath, ['cdk/app.ts'], {
      env: { ...process.env, PGKEEP_DEPLOY_CONFIG: file, CDK_OUTDIR: path.join(dir, 'out') },
    }).then(
      () => ({ code: 0, stderr: '' }),
      (error: { code: number; stderr: string }) => error,
    );
    expect(result.code).toBe(1);
    expect(result.stderr.trim()).toBe(
      `invalid deploy config ${file}: targets.1.endpoint: endpoint must be an https:// URL`,
    );
  });
});

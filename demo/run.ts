/**
 * `npm run demo`: the whole pipeline on one machine, no AWS account.
 *
 *   PostgreSQL (archiving every WAL segment through pgkeep)
 *     -> ingest bucket (s3rver on 127.0.0.1)
 *     -> replication and retention state machines, as synthesized by the CDK app, run by
 *        aws-local-stepfunctions with the real Lambda handlers, onto two "providers" (two more s3rvers)
 *     -> pgkeep verify (logical and point-in-time) from a provider's copy, with its report.
 *
 * Everything runs on loopback and is removed at the end; `--keep` leaves the work directory.
 */
import { execFile } from 'node:child_process';
import { chown, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { archiveCommandLine } from '../agent/wal/spool.ts';
import { awsLocations, type Location, type LocationFactory } from '../lambdas/lib/locations.ts';
import type { PipelineEnv, RuntimeTarget } from '../lambdas/lib/pipeline-env.ts';
import { createS3Client, S3Storage } from '../storage/s3-storage.ts';
import { providerTarget, replicationBindings, retentionBindings } from '../test/support/local-pipeline.ts';
import { makeServerDir, PG_BIN, type PgCluster, startCluster } from '../test/support/pg-cluster.ts';
import { NODE, PGKEEP_BUNDLE, stopWalPusher } from '../test/support/pgkeep-cli.ts';
import { S3RVER_CREDENTIALS, type S3Server, startS3Server } from '../test/support/s3-server.ts';
import { runStateMachine, synthPipeline } from '../test/support/state-machines.ts';

const execFileAsync = promisify(execFile);
const CLUSTER = 'demo';
const keep = process.argv.includes('--keep');

const step = (text: string) => console.log(`\n\x1b[1m== ${text}\x1b[0m`);
const show = (text: string) => console.log(text.replace(/^/gm, '   '));

async function pgkeep(args: string[], env: Record<string, string>): Promise<string> {
  const { stdout } = await execFileAsync(NODE, [PGKEEP_BUNDLE, ...args], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    maxBuffer: 16 * 1024 * 1024,
  });
  return stdout.trim();
}

function storageOn(server: S3Server, bucket: string): S3Storage {
  const options = { bucket, endpoint: server.endpoint, forcePathStyle: true, region: 'us-east-1' };
  const client = createS3Client(options);
  client.config.credentials = async () => S3RVER_CREDENTIALS;
  return new S3Storage(options, client);
}

async function countKeys(location: Location): Promise<number> {
  let n = 0;
  for await (const _ of location.storage.list('v1/')) n++;
  return n;
}

const servers: S3Server[] = [];
let pg: PgCluster | undefined;
let spoolDir: string | undefined;
let work: string | undefined;
try {
  step(
    'Starting three S3-compatible servers on 127.0.0.1 (ingest, "b2", and "dr-aws" standing in for AWS S3 in another region)',
  );
  const [ingestServer, b2Server, drServer] = await Promise.all([
    startS3Server({ buckets: ['ingest'] }),
    startS3Server({ buckets: ['offsite'] }),
    startS3Server({ buckets: ['dr'] }),
  ]);
  servers.push(ingestServer, b2Server, drServer);
  for (const [name, s] of [
    ['ingest', ingestServer],
    ['b2', b2Server],
    ['dr-aws', drServer],
  ] as const)
    show(`${name.padEnd(7)} ${s.endpoint}`);

  step('pgkeep keygen: a post-quantum hybrid identity; the host will only ever see its recipient');
  work = await makeServerDir('pgkeep-demo-');
  const identityFile = join(work, 'identity.txt');
  const recipient = await pgkeep(['keygen', '--output', identityFile], {});
  show(`recipient ${recipient.slice(0, 40)}…`);

  // The host's configuration: written for the postgres user, who runs archive_command.
  spoolDir = join(work, 'spool');
  await mkdir(spoolDir);
  const configPath = join(work, 'pgkeep.yaml');
  await writeFile(
    configPath,
    [
      `cluster: ${CLUSTER}`,
      `repository: "${ingestServer.url('ingest')}"`,
      `recipients: [${recipient}]`,
      `spoolDir: ${spoolDir}`,
      `pgBin: ${PG_BIN}`,
      // The provider copies pgkeep verify --from can read, and what it asserts on the restored data.
      'targets:',
      `  b2: "${b2Server.url('offsite')}"`,
      'verify:',
      '  assertions:',
      '    - { name: every-customer, database: shop, query: "select count(*) from customer", expected: 20000 }',
      '',
    ].join('\n'),
  );
  const { stdout: uid } = await execFileAsync('id', ['-u', 'postgres']).catch(() => ({ stdout: '' }));
  if (process.getuid?.() === 0 && uid) {
    const { stdout: gid } = await execFileAsync('id', ['-g', 'postgres']);
    for (const path of [spoolDir, configPath]) await chown(path, Number(uid), Number(gid));
  }
  const awsEnv = {
    AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
  };

  step('Starting PostgreSQL with archive_command = pgkeep wal-push');
  pg = await startCluster({
    settings: {
      archive_mode: 'on',
      wal_level: 'replica',
      archive_command: archiveCommandLine({
        nodePath: NODE,
        bundlePath: PGKEEP_BUNDLE,
        spoolDir,
        cluster: CLUSTER,
        configPath,
      }),
    },
    serverEnv: awsEnv,
  });
  const env = { ...pg.env, ...awsEnv, PGKEEP_CONFIG: configPath };
  show(`PostgreSQL 15 on 127.0.0.1:${pg.port}`);

  step('Some data: a "shop" database with customers and orders');
  await pg.sql('create database shop');
  await pg.sql(
    `create table customer (id serial primary key, name text, city text);
     insert into customer (name, city) select 'Kundin ' || g, (array['Zürich','Kraków','Łódź','東京'])[1 + g % 4]
       from generate_series(1, 20000) g;
     create table orders (id bigserial primary key, customer_id int references customer, amount numeric(10,2));
     insert into orders (customer_id, amount) select 1 + g % 20000, (g % 997) / 3.0 from generate_series(1, 200000) g;`,
    'shop',
  );
  show(await pg.sql("select 'customers: ' || count(*) from customer", 'shop'));

  step('pgkeep basebackup, then more writes and WAL archived by archive_command');
  show(await pgkeep(['basebackup'], env));
  await pg.sql(
    'insert into orders (customer_id, amount) select 1 + g % 20000, 1 from generate_series(1, 50000) g',
    'shop',
  );
  const walFile = await pg.sql('select pg_walfile_name(pg_switch_wal())');
  for (let i = 0; i < 600; i++) {
    const archived = await pg.sql("select coalesce(last_archived_wal, '') from pg_stat_archiver");
    if (archived >= walFile) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  show(`archived up to ${await pg.sql('select last_archived_wal from pg_stat_archiver')}`);

  step('pgkeep backup --all: pg_dump of every database plus the globals, streamed, encrypted');
  show(await pgkeep(['backup', '--all'], env));
  await pg.sql("update customer set city = 'Genève' where id % 10 = 0", 'shop');
  show(await pgkeep(['backup', '--all'], env));
  show(await pgkeep(['list'], env));

  step('Synthesizing the CDK app (offline) to get the real state machine definitions');
  const synth = synthPipeline();
  // The example deploy config (deploy/pgkeep.deploy.example.yaml) names these two targets.
  const targets: RuntimeTarget[] = [
    { name: 'dr-aws', type: 'aws-s3', bucket: 'dr', region: 'us-west-2', prefix: '' },
    providerTarget(b2Server.endpoint),
  ];
  const pipelineEnv: PipelineEnv = {
    ingestBucket: 'ingest',
    ingestRegion: 'us-east-1',
    clusters: [CLUSTER],
    targets,
    batchSize: 20,
    maxBatchesPerRun: 40,
    metricNamespace: 'pgkeep',
  };
  // Provider credentials come from their "secrets"; here every server takes s3rver's fixed keys.
  const production = awsLocations(pipelineEnv, async () => S3RVER_CREDENTIALS);
  const ingest: Location = { name: 'ingest', storage: storageOn(ingestServer, 'ingest') };
  // AWS S3 itself is not reachable here: the aws-s3 target is the third local server.
  const dr: Location = { name: 'dr-aws', storage: storageOn(drServer, 'dr') };
  const locations: LocationFactory = {
    ingest: async () => ingest,
    target: async (t) => (t.type === 'aws-s3' ? dr : production.target(t)),
  };
  const alerts: unknown[] = [];
  const replication = replicationBindings(pipelineEnv, locations, alerts);

  step('Replication state machine: ingest -> dr-aws and b2');
  const first = await runStateMachine(synth.stateMachine('replication'), replication, {}).catch((error) => {
    console.error(JSON.stringify(alerts, null, 2));
    throw error;
  });
  show(JSON.stringify(first.output, null, 2));
  for (const target of targets) {
    show(
      `${target.name}: ${await countKeys(await locations.target(target))} objects (ingest: ${await countKeys(ingest)})`,
    );
  }

  step('Replication again: idempotent, nothing left to copy');
  const second = await runStateMachine(synth.stateMachine('replication'), replication, {});
  show(JSON.stringify(second.output, null, 2));

  step('Retention state machine on the targets: keep the newest backup of each kind (ingest keeps all)');
  const policy = { minimumKeep: 1, keepLast: 1 };
  const retention = await runStateMachine(
    synth.stateMachine('retention'),
    retentionBindings(pipelineEnv, locations, { 'dr-aws': policy, b2: policy }, alerts),
    {},
  );
  show(JSON.stringify(retention.output, null, 2));
  synth.dispose();

  step('pgkeep verify --db shop --from b2: restore the b2 copy into a scratch cluster and check it');
  // On a machine that holds the identity (never the database host); the scratch cluster is removed.
  const withIdentity = { ...env, PGKEEP_IDENTITY: identityFile };
  show(await pgkeep(['verify', '--db', 'shop', '--from', 'b2'], withIdentity));

  step('pgkeep verify --pitr --from b2: base backup + WAL to a random point of the archived window');
  show(await pgkeep(['verify', '--pitr', '--from', 'b2', '--json'], withIdentity));
  if (alerts.length > 0) throw new Error(`alerts were raised: ${JSON.stringify(alerts)}`);

  step('Done: every object encrypted on the host, replicated to two providers, pruned, and verified');
  if (keep) show(`work directory kept: ${work} (identity: ${identityFile})`);
  const stored = await readFile(configPath, 'utf8');
  if (stored.includes('AGE-SECRET-KEY'))
    throw new Error('the host configuration must never hold an identity');
} finally {
  // archive_command's wal-push started a transient pusher (wal.asyncSeconds); it would idle out.
  if (spoolDir && pg) await stopWalPusher(spoolDir, CLUSTER, pg.dataDir).catch(() => undefined);
  await pg?.destroy();
  await Promise.all(servers.map((s) => s.stop()));
  if (work && !keep) await rm(work, { recursive: true, force: true });
}

/**
 * Builds the pgkeep stacks into an app. The CLI entry (cdk/app.ts) and the tests share it, so the
 * tests check exactly what `cdk synth` produces.
 */
import { type App, Tags } from 'aws-cdk-lib';
import {
  DEFAULT_DEPLOY_CONFIG_PATH,
  DEPLOY_CONFIG_CONTEXT_KEY,
  DEPLOY_CONFIG_ENV_VAR,
  type DeployConfig,
  loadDeployConfig,
} from './config.ts';
import { PipelineStack } from './pipeline-stack.ts';
import { StatefulStack } from './stateful-stack.ts';

export interface PgkeepStacks {
  readonly stateful: StatefulStack;
  readonly pipeline: PipelineStack;
}

/** Which config file to read: the `pgkeepConfig` context value, else $PGKEEP_DEPLOY_CONFIG, else the example. */
export function deployConfigPath(app: App, env: NodeJS.ProcessEnv = process.env): string {
  const fromContext = app.node.tryGetContext(DEPLOY_CONFIG_CONTEXT_KEY) as unknown;
  if (typeof fromContext === 'string' && fromContext !== '') return fromContext;
  return env[DEPLOY_CONFIG_ENV_VAR] || DEFAULT_DEPLOY_CONFIG_PATH;
}

/** Adds both stacks for `config` to `app`. */
export function addPgkeepStacks(app: App, config: DeployConfig): PgkeepStacks {
  const env = config.env ? { account: config.env.account, region: config.env.region } : undefined;
  const stateful = new StatefulStack(app, `${config.name}-stateful`, {
    env,
    config,
    description: 'pgkeep: ingest bucket, backup key, provider secrets, host roles (retained on delete)',
    terminationProtection: true,
  });
  const pipeline = new PipelineStack(app, `${config.name}-pipeline`, {
    env,
    config,
    key: stateful.key,
    targetSecrets: stateful.targetSecrets,
    targetDeleteSecrets: stateful.targetDeleteSecrets,
    description: 'pgkeep: replication, retention and verification state machines, schedules, alarms',
  });
  Tags.of(app).add('pgkeep:pipeline', config.name);
  return { stateful, pipeline };
}

/** Reads the config the app's context or environment names and adds the stacks. */
export function buildPgkeepApp(app: App): PgkeepStacks {
  return addPgkeepStacks(app, loadDeployConfig(deployConfigPath(app)));
}

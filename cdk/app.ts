// The CDK app entry (cdk.json "app"): read the deploy config, build the stacks. An invalid config
// fails synth here with the field's path; that message is the whole output, not a stack trace.
import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { DeployConfigError } from './config.ts';
import { buildPgkeepApp } from './pgkeep-app.ts';

const app = new App();
try {
  buildPgkeepApp(app);
} catch (error) {
  if (!(error instanceof DeployConfigError)) throw error;
  process.stderr.write(`${error.message}\n`);
  process.exit(1);
}
// cdk-nag's AwsSolutions pack runs on every synth: a new unacknowledged finding fails it.
Validations.of(app).addPlugins(new AwsSolutionsChecks());
app.synth();

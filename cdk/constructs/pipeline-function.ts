import { fileURLToPath } from 'node:url';
import { type Duration, RemovalPolicy, Tags } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction, OutputFormat } from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { type HandlerId, handlerEntry } from '../../lambdas/registry.ts';
import { LOG_WRITE_ACTIONS } from '../iam-actions.ts';
import { acknowledge } from '../nag.ts';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** The tag that names a function's handler module (`replication/plan-copies`); tests bind local handlers by it. */
export const HANDLER_TAG = 'pgkeep:handler';

export interface PipelineFunctionProps {
  /** The registered handler (lambdas/registry.ts): `replication/copy-batch` -> lambdas/replication/copy-batch.ts. */
  readonly handler: HandlerId;
  readonly description: string;
  /** Hard limit per invocation; the state machine's task timeout is set a little above it. */
  readonly timeout: Duration;
  readonly memorySizeMiB: number;
  readonly environment?: Record<string, string>;
  /** @default logs.RetentionDays.ONE_MONTH */
  readonly logRetention?: logs.RetentionDays;
}

/**
 * One pipeline Lambda: Node 24 on arm64, bundled by the local esbuild (never Docker), a bounded
 * timeout and memory, its own log group with a retention, and its own role that may write only to
 * that log group (no AWSLambdaBasicExecutionRole managed policy). Grants go to `role`.
 */
export class PipelineFunction extends Construct {
  readonly function: NodejsFunction;
  readonly role: iam.Role;
  readonly logGroup: logs.LogGroup;
  readonly handlerId: HandlerId;

  constructor(scope: Construct, id: string, props: PipelineFunctionProps) {
    super(scope, id);
    this.handlerId = props.handler;
    this.logGroup = new logs.LogGroup(this, 'Logs', {
      retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: `pgkeep ${props.handler}`,
    });
    this.role.addToPrincipalPolicy(
      new iam.PolicyStatement({ actions: [...LOG_WRITE_ACTIONS], resources: [this.logGroup.logGroupArn] }),
    );
    this.function = new NodejsFunction(this, 'Function', {
      entry: handlerEntry(props.handler),
      handler: 'handler',
      projectRoot: REPO_ROOT,
      depsLockFilePath: `${REPO_ROOT}package-lock.json`,
      runtime: lambda.Runtime.NODEJS_24_X,
      architecture: lambda.Architecture.ARM_64,
      description: props.description,
      timeout: props.timeout,
      memorySize: props.memorySizeMiB,
      role: this.role,
      logGroup: this.logGroup,
      loggingFormat: lambda.LoggingFormat.JSON,
      tracing: lambda.Tracing.ACTIVE,
      environment: { NODE_OPTIONS: '--enable-source-maps', ...props.environment },
      bundling: {
        forceDockerBundling: false,
        format: OutputFormat.ESM,
        target: 'node24',
        minify: true,
        sourceMap: true,
        // The Node 24 runtime ships the AWS SDK v3; bundling it would only grow the package.
        externalModules: ['@aws-sdk/*'],
        mainFields: ['module', 'main'],
        banner:
          "import { createRequire as __pgkeepCreateRequire } from 'node:module'; const require = __pgkeepCreateRequire(import.meta.url);",
      },
    });
    Tags.of(this.function).add(HANDLER_TAG, props.handler);
    acknowledge(
      this,
      'X-Ray tracing (xray:PutTraceSegments, xray:PutTelemetryRecords) accepts no resource other than "*"',
      'AwsSolutions-IAM5[Resource::*]',
    );
  }
}

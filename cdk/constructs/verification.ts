import { fileURLToPath } from 'node:url';
import { ArnFormat, Duration, IgnoreMode, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import type * as sns from 'aws-cdk-lib/aws-sns';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { Construct } from 'constructs';
import type { DeployConfig } from '../config.ts';
import { INGEST_READ_ACTIONS, VERIFY_KMS_ACTIONS, VERIFY_REPORT_WRITE_ACTIONS } from '../iam-actions.ts';
import { acknowledge, acknowledgeWildcardResources } from '../nag.ts';
import { verificationTaskRoleName } from '../names.ts';
import { PipelineFunction } from './pipeline-function.ts';
import { pipelineEnvironment } from './replication.ts';
import { alertStep, CATCH_ALL, lambdaStep, pipelineStateMachine } from './steps.ts';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** The container every verification task definition runs; the state machine overrides its environment. */
export const VERIFY_CONTAINER_NAME = 'verify';

/**
 * The environment contract of the verification container (verify/Dockerfile runs `pgkeep verify-restore`,
 * which reads these). Passed as RunTask overrides, never baked into the task definition.
 */
export const VERIFY_TASK_ENV = {
  repository: 'PGKEEP_REPOSITORY',
  cluster: 'PGKEEP_CLUSTER',
  backupId: 'PGKEEP_BACKUP_ID',
  runId: 'PGKEEP_VERIFY_RUN_ID',
  reportKey: 'PGKEEP_VERIFY_REPORT_KEY',
  kmsKeyArn: 'PGKEEP_KMS_KEY_ARN',
  assertions: 'PGKEEP_VERIFY_ASSERTIONS',
} as const;

/** The ARN without revision, built exactly as EcsRunTask builds it for its grant. */
function taskDefinitionFamilyArn(taskDefinition: ecs.TaskDefinition): string {
  const stack = Stack.of(taskDefinition);
  const parts = stack.splitArn(taskDefinition.taskDefinitionArn, ArnFormat.SLASH_RESOURCE_NAME);
  return stack.formatArn({
    partition: parts.partition,
    service: parts.service,
    account: parts.account,
    region: parts.region,
    resource: parts.resource,
    arnFormat: parts.arnFormat,
    resourceName: parts.resourceName?.split(':')[0],
  });
}

export interface VerificationProps {
  readonly config: DeployConfig;
  readonly bucket: s3.IBucket;
  readonly key: kms.IKey;
  readonly alertTopic: sns.ITopic;
}

/**
 * Restore verification: pick a backup, restore it on Fargate with the PostgreSQL of its major
 * version (one image and task definition per configured version, built from verify/Dockerfile),
 * then record the report the task wrote as a metric; a failure alerts. The task role is the only
 * principal in the app that may kms:Decrypt (the backup key's policy names it).
 */
export class Verification extends Construct {
  readonly stateMachine: sfn.StateMachine;
  readonly functions: PipelineFunction[];
  readonly taskRole: iam.Role;
  readonly cluster: ecs.Cluster;
  readonly taskDefinitions: ReadonlyMap<number, ecs.FargateTaskDefinition>;

  constructor(scope: Construct, id: string, props: VerificationProps) {
    super(scope, id);
    const { config, bucket } = props;

    const flowLogs = new logs.LogGroup(this, 'FlowLogs', {
      retention: logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    // Public subnets and no NAT gateway: the task only talks out (S3 through the gateway endpoint,
    // ECR, KMS, logs), nothing can reach it (no inbound rule), and an idle VPC costs nothing.
    const vpc = new ec2.Vpc(this, 'Vpc', {
      maxAzs: 2,
      natGateways: 0,
      subnetConfiguration: [{ name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 }],
      gatewayEndpoints: { S3: { service: ec2.GatewayVpcEndpointAwsService.S3 } },
      flowLogs: {
        all: {
          destination: ec2.FlowLogDestination.toCloudWatchLogs(flowLogs),
          trafficType: ec2.FlowLogTrafficType.ALL,
        },
      },
    });
    const securityGroup = new ec2.SecurityGroup(this, 'TaskSecurityGroup', {
      vpc,
      description: 'pgkeep restore verification: outbound only',
      allowAllOutbound: true,
    });
    this.cluster = new ecs.Cluster(this, 'Cluster', {
      vpc,
      containerInsightsV2: ecs.ContainerInsights.ENABLED,
    });

    this.taskRole = new iam.Role(this, 'TaskRole', {
      roleName: verificationTaskRoleName(config.name),
      assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'),
      description: 'pgkeep restore verification task: the only role that may decrypt backups',
    });
    this.taskRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: [...INGEST_READ_ACTIONS],
        resources: [bucket.bucketArn, bucket.arnForObjects('v1/*')],
      }),
    );
    this.taskRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: [...VERIFY_REPORT_WRITE_ACTIONS],
        resources: [bucket.arnForObjects('verify/*')],
      }),
    );
    this.taskRole.addToPrincipalPolicy(
      new iam.PolicyStatement({ actions: [...VERIFY_KMS_ACTIONS], resources: [props.key.keyArn] }),
    );
    acknowledgeWildcardResources(
      this.taskRole,
      'the task restores any backup of any cluster (v1/*) and writes its report under verify/<cluster>/, where <cluster> is chosen per run',
      bucket.arnForObjects('v1/*'),
      bucket.arnForObjects('verify/*'),
    );

    const containerLogs = new logs.LogGroup(this, 'TaskLogs', {
      retention: logs.RetentionDays.THREE_MONTHS,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    const taskDefinitions = new Map<number, ecs.FargateTaskDefinition>();
    for (const major of config.verification.postgresMajorVersions) {
      const taskDefinition = new ecs.FargateTaskDefinition(this, `TaskPg${major}`, {
        family: `${config.name}-verify-pg${major}`,
        cpu: config.verification.cpu,
        memoryLimitMiB: config.verification.memoryMiB,
        ephemeralStorageGiB: config.verification.ephemeralStorageGiB,
        taskRole: this.taskRole,
        runtimePlatform: {
          cpuArchitecture: ecs.CpuArchitecture.X86_64,
          operatingSystemFamily: ecs.OperatingSystemFamily.LINUX,
        },
      });
      taskDefinition.addContainer(VERIFY_CONTAINER_NAME, {
        image: ecs.ContainerImage.fromAsset(REPO_ROOT, {
          file: 'verify/Dockerfile',
          buildArgs: { PG_MAJOR: String(major) },
          // The image needs the Dockerfile and the bundled agent only; never the repo's node_modules.
          ignoreMode: IgnoreMode.DOCKER,
          exclude: ['*', '!verify', '!dist'],
        }),
        essential: true,
        logging: ecs.LogDrivers.awsLogs({ logGroup: containerLogs, streamPrefix: `pg${major}` }),
      });
      acknowledge(
        taskDefinition,
        'the execution role CDK generates needs ecr:GetAuthorizationToken to pull the image, and that action accepts no resource other than "*"',
        'AwsSolutions-IAM5[Resource::*]',
      );
      taskDefinitions.set(major, taskDefinition);
    }
    this.taskDefinitions = taskDefinitions;

    // Verification reads ingest only; the targets and their secrets stay out of its environment.
    const environment = pipelineEnvironment({
      config: { ...config, targets: [] },
      bucket,
      targetSecrets: new Map(),
    });
    const pick = new PipelineFunction(this, 'PickBackup', {
      handler: 'verification/pick-backup',
      description: 'pgkeep verification: choose the backup to restore and where its report goes',
      timeout: Duration.minutes(2),
      memorySizeMiB: 512,
      environment: {
        ...environment,
        PGKEEP_VERIFY_MAJOR_VERSIONS: JSON.stringify(config.verification.postgresMajorVersions),
      },
    });
    const record = new PipelineFunction(this, 'RecordResult', {
      handler: 'verification/record-result',
      description: 'pgkeep verification: read the report the task wrote and publish the outcome as a metric',
      timeout: Duration.minutes(1),
      memorySizeMiB: 256,
      environment,
    });
    this.functions = [pick, record];
    for (const fn of this.functions) {
      fn.role.addToPrincipalPolicy(
        new iam.PolicyStatement({
          actions: [...INGEST_READ_ACTIONS],
          resources: [bucket.bucketArn, bucket.arnForObjects('v1/*')],
        }),
      );
      acknowledgeWildcardResources(
        fn,
        'choosing a backup and reading its report list manifests and reports of every cluster (v1/*)',
        bucket.arnForObjects('v1/*'),
      );
    }

    // --- the state machine ---
    const alert = alertStep(
      this,
      'Alert verification failure',
      props.alertTopic,
      'pgkeep: restore verification failed',
      sfn.TaskInput.fromText(
        sfn.JsonPath.format('Restore verification failed: {}', sfn.JsonPath.stringAt('$.result.summary')),
      ),
    );
    const failed = new sfn.Fail(this, 'Verification failed', {
      error: 'VerificationFailed',
      causePath: '$.result.summary',
    });
    alert.addCatch(failed, { errors: ['States.ALL'], resultPath: '$.alertError' });
    alert.next(failed);

    const recordStep = lambdaStep(this, 'Record verification result', record.function, {
      resultPath: '$.result',
      timeout: Duration.seconds(70),
    });
    recordStep.addCatch(
      new sfn.Pass(this, 'Result could not be recorded', {
        parameters: { passed: false, 'summary.$': '$.recordError.Cause' },
        resultPath: '$.result',
      }).next(alert),
      { errors: ['States.ALL'], resultPath: '$.recordError' },
    );
    recordStep.next(
      new sfn.Choice(this, 'Backup verified?')
        .when(sfn.Condition.booleanEquals('$.result.passed', true), new sfn.Succeed(this, 'Backup verified'))
        .otherwise(alert),
    );

    const pickStep = lambdaStep(this, 'Pick backup to verify', pick.function, {
      resultPath: '$.backup',
      timeout: Duration.seconds(130),
    }).addCatch(recordStep, CATCH_ALL);

    const whichMajor = new sfn.Choice(this, 'Which PostgreSQL major version?');
    for (const [major, taskDefinition] of taskDefinitions) {
      const restore = new tasks.EcsRunTask(this, `Restore on PostgreSQL ${major}`, {
        integrationPattern: sfn.IntegrationPattern.RUN_JOB,
        cluster: this.cluster,
        taskDefinition,
        launchTarget: new tasks.EcsFargateLaunchTarget({
          platformVersion: ecs.FargatePlatformVersion.LATEST,
        }),
        assignPublicIp: true,
        subnets: { subnetType: ec2.SubnetType.PUBLIC },
        securityGroups: [securityGroup],
        containerOverrides: [
          {
            containerDefinition: taskDefinition.defaultContainer!,
            environment: [
              { name: VERIFY_TASK_ENV.repository, value: `s3://${bucket.bucketName}` },
              { name: VERIFY_TASK_ENV.cluster, value: sfn.JsonPath.stringAt('$.backup.cluster') },
              { name: VERIFY_TASK_ENV.backupId, value: sfn.JsonPath.stringAt('$.backup.backupId') },
              { name: VERIFY_TASK_ENV.runId, value: sfn.JsonPath.stringAt('$.backup.runId') },
              { name: VERIFY_TASK_ENV.reportKey, value: sfn.JsonPath.stringAt('$.backup.reportKey') },
              { name: VERIFY_TASK_ENV.kmsKeyArn, value: props.key.keyArn },
              { name: VERIFY_TASK_ENV.assertions, value: JSON.stringify(config.verification.assertions) },
            ],
          },
        ],
        resultPath: sfn.JsonPath.DISCARD,
        taskTimeout: sfn.Timeout.duration(Duration.hours(6)),
      });
      // Capacity and throttling errors are worth another try; a restore that ran and failed is not.
      restore.addRetry({
        errors: ['ECS.AmazonECSException', 'ECS.ServerException', 'ECS.LimitExceededException'],
        interval: Duration.seconds(60),
        maxAttempts: 3,
        backoffRate: 2,
      });
      restore.addCatch(recordStep, CATCH_ALL);
      restore.next(recordStep);
      whichMajor.when(sfn.Condition.numberEquals('$.backup.pgMajor', major), restore);
    }
    whichMajor.otherwise(
      new sfn.Pass(this, 'No image for this major version', {
        parameters: {
          Error: 'UnsupportedMajorVersion',
          'Cause.$':
            "States.Format('no verification image for PostgreSQL {}; add it to verification.postgresMajorVersions', $.backup.pgMajor)",
        },
        resultPath: '$.error',
      }).next(recordStep),
    );

    this.stateMachine = pipelineStateMachine(this, 'StateMachine', {
      stateMachineName: `${config.name}-verification`,
      comment: 'pgkeep: restore a backup on Fargate, run the checks, record the outcome',
      definition: pickStep.next(whichMajor),
      timeout: Duration.hours(8),
      invokes: this.functions.map((f) => f.function),
      otherWildcards: [...taskDefinitions.values()].map((taskDefinition) => ({
        resource: `${taskDefinitionFamilyArn(taskDefinition)}:*`,
        reason:
          'CDK grants ecs:RunTask on every revision of the task definition family ("<family>:*"), so a new image revision needs no new policy',
      })),
    });
  }
}

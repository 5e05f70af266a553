import { fileURLToPath } from 'node:url';
import { ArnFormat, Aws, Duration, IgnoreMode, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecrAssets from 'aws-cdk-lib/aws-ecr-assets';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as sns from 'aws-cdk-lib/aws-sns';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { VERIFY_REPORT_ROOT } from '../../core/keys.ts';
import { VERIFY_TASK_ENV } from '../../core/verify-task.ts';
import type { VerificationConfig } from '../config.ts';
import { BUCKET_LIST_ACTIONS, OBJECT_READ_ACTIONS } from '../iam-actions.ts';
import { acknowledge, acknowledgeWildcardResources } from '../nag.ts';
import { verificationTaskRoleArn } from '../names.ts';
import { PipelineFunction } from './pipeline-function.ts';
import type { PipelineTargets } from './pipeline-targets.ts';
import { alertStep, CATCH_ALL, lambdaStep, pipelineStateMachine } from './steps.ts';
import { verificationTaskRole } from './verification-task-role.ts';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** The container every verification task definition runs; the state machine overrides its environment. */
export const VERIFY_CONTAINER_NAME = 'verify';

/** The environment contract of the verification container (`pgkeep verify --from-env` reads it). */
export { VERIFY_TASK_ENV };

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
  /** The deployment's name: prefixes the state machine, task families and task roles. */
  readonly deploymentName: string;
  readonly clusterNames: readonly string[];
  readonly settings: VerificationConfig;
  /** Ingest and the targets: a run may restore from any target's copy. */
  readonly targets: PipelineTargets;
  readonly key: kms.IKey;
  readonly alertTopic: sns.ITopic;
}

/**
 * Restore verification: pick a backup and a source (ingest or a target, in turn), restore it on
 * Fargate with the PostgreSQL of its major version (one image per configured version, built from
 * verify/Dockerfile; one task definition per cluster and version), then record the report the task
 * wrote as a metric; a failure alerts. Each cluster's task role reads only that cluster's objects
 * and writes only its reports; the task roles are the only principals in the app that may unseal
 * the automation identity (the backup key's policy names them).
 */
export class Verification extends Construct {
  readonly stateMachine: sfn.StateMachine;
  readonly functions: PipelineFunction[];
  /** Cluster name -> its task role. */
  readonly taskRoles: ReadonlyMap<string, iam.Role>;
  readonly cluster: ecs.Cluster;
  /** `<cluster>/<major>` -> task definition. */
  readonly taskDefinitions: ReadonlyMap<string, ecs.FargateTaskDefinition>;
  readonly securityGroup: ec2.SecurityGroup;

  constructor(scope: Construct, id: string, props: VerificationProps) {
    super(scope, id);
    const { deploymentName, settings, targets } = props;
    const { bucket } = targets;

    const flowLogs = new logs.LogGroup(this, 'FlowLogs', {
      retention: logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    // Public subnets and no NAT gateway: the task only talks out (S3 through the gateway endpoint,
    // ECR, KMS, Secrets Manager, the providers, logs), nothing can reach it (no inbound rule), and an
    // idle VPC costs nothing.
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
    // Everything the task talks to is an HTTPS API; a restored backup has nothing else to reach.
    this.securityGroup = new ec2.SecurityGroup(this, 'TaskSecurityGroup', {
      vpc,
      description: 'pgkeep restore verification: outbound HTTPS only',
      allowAllOutbound: false,
    });
    this.securityGroup.addEgressRule(
      ec2.Peer.anyIpv4(),
      ec2.Port.tcp(443),
      'HTTPS to AWS APIs and providers',
    );
    this.cluster = new ecs.Cluster(this, 'Cluster', {
      vpc,
      containerInsightsV2: ecs.ContainerInsights.ENABLED,
    });

    const taskRoles = new Map<string, iam.Role>();
    for (const clusterName of props.clusterNames)
      taskRoles.set(
        clusterName,
        verificationTaskRole(
          this,
          {
            deploymentName,
            bucket,
            key: props.key,
            targets: targets.targets,
            targetSecrets: targets.targetSecrets,
          },
          clusterName,
        ),
      );
    this.taskRoles = taskRoles;

    const containerLogs = new logs.LogGroup(this, 'TaskLogs', {
      retention: logs.RetentionDays.THREE_MONTHS,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    // The task definitions' own role may do nothing: every run overrides it with its cluster's role.
    const baseTaskRole = new iam.Role(this, 'TaskRoleWithoutGrants', {
      assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'),
      description: 'pgkeep restore verification: the task definitions default role; every run overrides it',
    });
    const taskDefinitions = new Map<string, ecs.FargateTaskDefinition>();
    for (const major of settings.postgresMajorVersions) {
      const image = new ecrAssets.DockerImageAsset(this, `ImagePg${major}`, {
        directory: REPO_ROOT,
        file: 'verify/Dockerfile',
        buildArgs: { PG_MAJOR: String(major) },
        platform: ecrAssets.Platform.LINUX_AMD64,
        // The image needs the Dockerfile and the bundled agent only; never the repo's node_modules.
        ignoreMode: IgnoreMode.DOCKER,
        exclude: ['*', '!verify', '!dist'],
      });
      // One task definition per major for every cluster: the run's cluster picks the task role
      // (RunTask's TaskRoleArn override), so a deployment's size does not grow with task definitions.
      const taskDefinition = new ecs.FargateTaskDefinition(this, `TaskPg${major}`, {
        family: `${deploymentName}-verify-pg${major}`,
        cpu: settings.cpu,
        memoryLimitMiB: settings.memoryMiB,
        ephemeralStorageGiB: settings.ephemeralStorageGiB,
        taskRole: baseTaskRole,
        runtimePlatform: {
          cpuArchitecture: ecs.CpuArchitecture.X86_64,
          operatingSystemFamily: ecs.OperatingSystemFamily.LINUX,
        },
      });
      taskDefinition.addContainer(VERIFY_CONTAINER_NAME, {
        image: ecs.ContainerImage.fromDockerImageAsset(image),
        essential: true,
        logging: ecs.LogDrivers.awsLogs({ logGroup: containerLogs, streamPrefix: `pg${major}` }),
      });
      acknowledge(
        taskDefinition,
        'the execution role CDK generates needs ecr:GetAuthorizationToken to pull the image, and that action accepts no resource other than "*"',
        'AwsSolutions-IAM5[Resource::*]',
      );
      taskDefinitions.set(String(major), taskDefinition);
    }
    this.taskDefinitions = taskDefinitions;

    // Picking a source reads each target's manifests; recording reads the report in ingest.
    const environment = targets.environment();
    const pick = new PipelineFunction(this, 'PickBackup', {
      handler: 'verification/pick-backup',
      description: 'pgkeep verification: choose the backup and source to restore and where its report goes',
      timeout: Duration.minutes(2),
      memorySizeMiB: 512,
      environment: {
        ...environment,
        PGKEEP_VERIFY_MAJOR_VERSIONS: JSON.stringify(settings.postgresMajorVersions),
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
    targets.grantRead(pick);
    for (const fn of this.functions) {
      fn.role.addToPrincipalPolicy(
        new iam.PolicyStatement({
          actions: [...OBJECT_READ_ACTIONS, ...BUCKET_LIST_ACTIONS],
          resources: [
            bucket.bucketArn,
            bucket.arnForObjects('v1/*'),
            bucket.arnForObjects(`${VERIFY_REPORT_ROOT}/*`),
          ],
        }),
      );
      acknowledgeWildcardResources(
        fn,
        'choosing a backup and reading its report list manifests (v1/*) and reports (verify/*) of every cluster',
        bucket.arnForObjects('v1/*'),
        bucket.arnForObjects(`${VERIFY_REPORT_ROOT}/*`),
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
    const ingestUrl = `s3://${bucket.bucketName}/?region=${Aws.REGION}`;
    const subnets = this.cluster.vpc.selectSubnets({ subnetType: ec2.SubnetType.PUBLIC }).subnetIds;
    const roleArnPrefix = verificationTaskRoleArn(deploymentName, 'x').slice(0, -1);
    for (const [major, taskDefinition] of taskDefinitions) {
      const environment = [
        [VERIFY_TASK_ENV.repository, '$.backup.repository'],
        [VERIFY_TASK_ENV.source, '$.backup.source'],
        [VERIFY_TASK_ENV.sourceSecretArn, '$.backup.sourceSecretArn'],
        [VERIFY_TASK_ENV.cluster, '$.backup.cluster'],
        [VERIFY_TASK_ENV.backupId, '$.backup.backupId'],
        [VERIFY_TASK_ENV.runId, '$.backup.runId'],
        [VERIFY_TASK_ENV.reportKey, '$.backup.reportKey'],
      ].map(([name, path]) => ({ Name: name, 'Value.$': path }));
      for (const [name, value] of [
        [VERIFY_TASK_ENV.reportRepository, ingestUrl],
        [VERIFY_TASK_ENV.kmsKeyArn, props.key.keyArn],
        [VERIFY_TASK_ENV.sealedIdentity, settings.sealedIdentity ?? ''],
        [VERIFY_TASK_ENV.assertions, JSON.stringify(settings.assertions)],
      ] as const)
        environment.push({ Name: name, Value: value } as never);
      // RunTask (.sync) as raw JSON: CDK's EcsRunTask cannot override the task role, and the role is
      // what keeps a run for cluster A from reading cluster B.
      const restore = new sfn.CustomState(this, `Restore on PostgreSQL ${major}`, {
        stateJson: {
          Type: 'Task',
          Resource: `arn:${Aws.PARTITION}:states:::ecs:runTask.sync`,
          Parameters: {
            Cluster: this.cluster.clusterArn,
            TaskDefinition: taskDefinition.taskDefinitionArn,
            LaunchType: 'FARGATE',
            PlatformVersion: 'LATEST',
            NetworkConfiguration: {
              AwsvpcConfiguration: {
                Subnets: subnets,
                SecurityGroups: [this.securityGroup.securityGroupId],
                AssignPublicIp: 'ENABLED',
              },
            },
            Overrides: {
              'TaskRoleArn.$': `States.Format('${roleArnPrefix}{}', $.backup.cluster)`,
              ContainerOverrides: [{ Name: VERIFY_CONTAINER_NAME, Environment: environment }],
            },
          },
          ResultPath: null,
          TimeoutSeconds: Duration.hours(6).toSeconds(),
        },
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
      whichMajor.when(sfn.Condition.numberEquals('$.backup.pgMajor', Number(major)), restore);
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
      stateMachineName: `${deploymentName}-verification`,
      comment: 'pgkeep: restore a backup on Fargate, run the checks, record the outcome',
      definition: pickStep.next(whichMajor),
      timeout: Duration.hours(8),
      invokes: this.functions.map((f) => f.function),
      otherWildcards: [
        ...[...taskDefinitions.values()].map((taskDefinition) => ({
          resource: `${taskDefinitionFamilyArn(taskDefinition)}:*`,
          reason:
            'ecs:RunTask on every revision of the task definition family ("<family>:*"), so a new image revision needs no new policy',
        })),
        {
          resource: `${roleArnPrefix}*`,
          reason:
            "iam:PassRole on the clusters' verification roles (one per cluster, by name): each run passes the role of the cluster it verifies",
        },
      ],
    });
    const machineRole = this.stateMachine.role;
    for (const taskDefinition of taskDefinitions.values()) {
      machineRole.addToPrincipalPolicy(
        new iam.PolicyStatement({
          actions: ['ecs:RunTask'],
          resources: [`${taskDefinitionFamilyArn(taskDefinition)}:*`],
        }),
      );
    }
    machineRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['ecs:StopTask', 'ecs:DescribeTasks'],
        resources: ['*'],
        conditions: { ArnEquals: { 'ecs:cluster': this.cluster.clusterArn } },
      }),
    );
    machineRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['events:PutTargets', 'events:PutRule', 'events:DescribeRule'],
        resources: [
          `arn:${Aws.PARTITION}:events:${Aws.REGION}:${Aws.ACCOUNT_ID}:rule/StepFunctionsGetEventsForECSTaskRule`,
        ],
      }),
    );
    machineRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['iam:PassRole'],
        resources: [
          `${roleArnPrefix}*`,
          baseTaskRole.roleArn,
          ...[...taskDefinitions.values()].map((t) => t.obtainExecutionRole().roleArn),
        ],
      }),
    );
  }
}

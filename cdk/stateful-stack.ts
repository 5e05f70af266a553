import { CfnOutput, Stack, type StackProps } from 'aws-cdk-lib';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import type { Construct } from 'constructs';
import { clusterPrefix } from '../core/keys.ts';
import type { DeployConfig } from './config.ts';
import { BackupKey } from './constructs/backup-key.ts';
import { HostPrincipal } from './constructs/host-principal.ts';
import { IngestBucket } from './constructs/ingest-bucket.ts';
import { TargetCredentials } from './constructs/target-credentials.ts';
import { ingestBucketName, verificationTaskRoleArn } from './names.ts';

export interface StatefulStackProps extends StackProps {
  readonly config: DeployConfig;
}

/**
 * What must outlive any redeploy: the ingest bucket, the backup key, the providers' secrets and the
 * hosts' identities. Everything here is retained when the stack is deleted; the pipeline stack can be
 * destroyed and recreated freely.
 */
export class StatefulStack extends Stack {
  readonly bucket: s3.Bucket;
  readonly key: kms.Key;
  readonly targetSecrets: ReadonlyMap<string, secretsmanager.Secret>;
  readonly targetDeleteSecrets: ReadonlyMap<string, secretsmanager.Secret>;
  readonly hosts: ReadonlyMap<string, HostPrincipal>;

  constructor(scope: Construct, id: string, props: StatefulStackProps) {
    super(scope, id, props);
    const { config } = props;
    const ingest = new IngestBucket(this, 'Ingest', {
      bucketName: ingestBucketName(config.name),
      objectLockMode: config.ingest.objectLock.mode,
      objectLockDefaultRetentionDays: config.ingest.objectLock.defaultRetentionDays,
    });
    this.bucket = ingest.bucket;
    const decryptors = config.clusters.map((cluster) => verificationTaskRoleArn(config.name, cluster.name));
    if (config.operatorRoleArn) decryptors.push(config.operatorRoleArn);
    this.key = new BackupKey(this, 'BackupKey', { decryptorRoleArns: decryptors }).key;
    const credentials = new TargetCredentials(this, 'TargetCredentials', { targets: config.targets });
    this.targetSecrets = credentials.secrets;
    this.targetDeleteSecrets = credentials.deleteSecrets;

    const hosts = new Map<string, HostPrincipal>();
    for (const cluster of config.clusters) {
      const host = new HostPrincipal(this, `Host-${cluster.name}`, {
        cluster: cluster.name,
        bucket: this.bucket,
        assumedBy: cluster.hostAssumedBy,
      });
      hosts.set(cluster.name, host);
      new CfnOutput(this, `HostRoleArn-${cluster.name}`, {
        description: `cluster ${cluster.name}: the role the agent runs as`,
        value: host.role.roleArn,
      });
      if (host.instanceProfile)
        new CfnOutput(this, `HostInstanceProfile-${cluster.name}`, {
          description: `cluster ${cluster.name}: attach to the database instance`,
          value: host.instanceProfile.instanceProfileName,
        });
      new CfnOutput(this, `RepositoryUrl-${cluster.name}`, {
        description: `cluster ${cluster.name}: the agent's repository URL (keys go under ${clusterPrefix(cluster.name)})`,
        value: `s3://${this.bucket.bucketName}`,
      });
    }
    this.hosts = hosts;
    ingest.denyHostOverwrites([...hosts.values()].map((host) => host.role));
    ingest.denyReportWrites([...hosts.values()].map((host) => host.role));

    new CfnOutput(this, 'IngestBucketName', { value: this.bucket.bucketName });
    new CfnOutput(this, 'IngestRegion', { value: this.region });
    new CfnOutput(this, 'BackupKeyArn', {
      description:
        'seals the automation identity (pgkeep keygen --kms-key); only the verification task roles unseal it',
      value: this.key.keyArn,
    });
    for (const [target, secret] of this.targetSecrets)
      new CfnOutput(this, `TargetSecretArn-${target}`, {
        description: `target ${target}: put {"accessKeyId","secretAccessKey"} here`,
        value: secret.secretArn,
      });
  }
}

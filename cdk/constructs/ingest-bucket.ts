import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { FORMAT_PREFIX, PIPELINE_PREFIX, VERIFY_REPORT_ROOT } from '../../core/keys.ts';
import { HOST_OVERWRITE_CONDITIONS, HOST_SSE_C_CONDITIONS, OBJECT_CREATE_ACTIONS } from '../iam-actions.ts';

export interface IngestBucketProps {
  /** Fixed so other stacks can name it without an export (cdk/names.ts ingestBucketName). */
  readonly bucketName: string;
  readonly objectLockMode: 'GOVERNANCE' | 'COMPLIANCE';
  readonly objectLockDefaultRetentionDays: number;
  /** Incomplete multipart uploads older than this are aborted. @default 2 */
  readonly abortIncompleteMultipartUploadAfterDays?: number;
}

/**
 * The bucket every host writes into: versioned, Object Lock on by default, TLS only, never public,
 * encrypted at rest, incomplete uploads cleaned up, and every object event on EventBridge.
 *
 * Encryption at rest is SSE-S3, not SSE-KMS with the backup key: the objects are already age
 * encrypted on the host, and SSE-KMS would force every reader (replication, freshness) to hold
 * kms:Decrypt, which only the verification task may have.
 */
export class IngestBucket extends Construct {
  readonly bucket: s3.Bucket;
  /** Server access logs of the ingest bucket (an audit trail of every request). */
  readonly accessLogsBucket: s3.Bucket;

  constructor(scope: Construct, id: string, props: IngestBucketProps) {
    super(scope, id);
    this.accessLogsBucket = new s3.Bucket(this, 'AccessLogs', {
      encryption: s3.BucketEncryption.S3_MANAGED,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
      removalPolicy: RemovalPolicy.RETAIN,
      lifecycleRules: [{ id: 'expire-access-logs', expiration: Duration.days(365) }],
    });
    const retention = Duration.days(props.objectLockDefaultRetentionDays);
    this.bucket = new s3.Bucket(this, 'Bucket', {
      bucketName: props.bucketName,
      versioned: true,
      objectLockEnabled: true,
      objectLockDefaultRetention:
        props.objectLockMode === 'COMPLIANCE'
          ? s3.ObjectLockRetention.compliance(retention)
          : s3.ObjectLockRetention.governance(retention),
      encryption: s3.BucketEncryption.S3_MANAGED,
      bucketKeyEnabled: true,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      serverAccessLogsBucket: this.accessLogsBucket,
      serverAccessLogsPrefix: 'ingest/',
      removalPolicy: RemovalPolicy.RETAIN,
      lifecycleRules: [
        {
          id: 'abort-incomplete-multipart-uploads',
          enabled: true,
          abortIncompleteMultipartUploadAfter: Duration.days(
            props.abortIncompleteMultipartUploadAfterDays ?? 2,
          ),
        },
        {
          // Replication rewrites its cursors every run; each old version stays under Object Lock
          // for the retention period and is then expired, so they do not pile up for ever.
          id: 'expire-old-pipeline-state',
          enabled: true,
          prefix: PIPELINE_PREFIX,
          noncurrentVersionExpiration: Duration.days(props.objectLockDefaultRetentionDays + 1),
          expiredObjectDeleteMarker: true,
        },
        {
          // Ingest pruning deletes without a version id, which writes a delete marker: this rule makes
          // the bytes go a day later (Object Lock keeps a version until its retain-until date anyway,
          // which is why ingest.keepDays must exceed the lock's days). Hosts can neither delete nor
          // overwrite, so without pruning nothing under v1/ ever becomes noncurrent.
          id: 'expire-pruned-versions',
          enabled: true,
          prefix: `${FORMAT_PREFIX}/`,
          noncurrentVersionExpiration: Duration.days(1),
          expiredObjectDeleteMarker: true,
        },
      ],
    });
    // EventBridge notifications as the native CloudFormation property: `eventBridgeEnabled` would add
    // CDK's notifications custom resource, a Lambda with a managed policy and an unbounded log group.
    (this.bucket.node.defaultChild as s3.CfnBucket).notificationConfiguration = {
      eventBridgeConfiguration: { eventBridgeEnabled: true },
    };
    // Nothing outside the versioned layout, the verifier's reports and the pipeline's own state (none
    // of which but v1/<cluster>/ a host may write) belongs here; a stray PUT from a misconfigured
    // client is refused rather than stored under Object Lock for the retention period.
    this.bucket.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'DenyWritesOutsideLayout',
        effect: iam.Effect.DENY,
        principals: [new iam.AnyPrincipal()],
        actions: [...OBJECT_CREATE_ACTIONS],
        notResources: [
          this.bucket.arnForObjects(`${FORMAT_PREFIX}/*`),
          this.bucket.arnForObjects(`${VERIFY_REPORT_ROOT}/*`),
          this.bucket.arnForObjects(`${PIPELINE_PREFIX}*`),
        ],
      }),
    );
  }

  /**
   * Denies `hosts` every write under the verification reports' prefix and the pipeline's own state
   * (replication cursors) in the bucket policy itself, so a host can neither vouch for its own
   * backups nor move a cursor past objects it wants left uncopied, even if a broad policy is attached
   * to its role later.
   */
  denyReportWrites(hosts: iam.IRole[]): void {
    if (hosts.length === 0) return;
    this.bucket.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'DenyHostsWritingReports',
        effect: iam.Effect.DENY,
        principals: hosts.map((role) => new iam.ArnPrincipal(role.roleArn)),
        actions: [...OBJECT_CREATE_ACTIONS],
        resources: [
          this.bucket.arnForObjects(`${VERIFY_REPORT_ROOT}/*`),
          this.bucket.arnForObjects(`${PIPELINE_PREFIX}*`),
        ],
      }),
    );
  }

  /**
   * Denies `hosts` any write that could replace an object (no `If-None-Match`) and any SSE-C upload,
   * in the bucket policy: it holds whatever identity policies say, and hosts may not change it.
   */
  denyHostOverwrites(hosts: readonly iam.IRole[]): void {
    if (hosts.length === 0) return;
    const principals = hosts.map((role) => new iam.ArnPrincipal(role.roleArn));
    const objects = [this.bucket.arnForObjects('*')];
    this.bucket.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'DenyHostOverwrites',
        effect: iam.Effect.DENY,
        principals,
        actions: [...OBJECT_CREATE_ACTIONS],
        resources: objects,
        conditions: HOST_OVERWRITE_CONDITIONS,
      }),
    );
    this.bucket.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'DenyHostSseC',
        effect: iam.Effect.DENY,
        principals,
        actions: [...OBJECT_CREATE_ACTIONS],
        resources: objects,
        conditions: HOST_SSE_C_CONDITIONS,
      }),
    );
  }
}

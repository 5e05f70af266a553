import * as iam from 'aws-cdk-lib/aws-iam';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { clusterPrefix } from '../../core/keys.ts';
import {
  HOST_DENIED_S3_ACTIONS,
  HOST_LIST_ACTIONS,
  HOST_OBJECT_ACTIONS,
  HOST_OVERWRITE_CONDITIONS,
  HOST_SSE_C_CONDITIONS,
  KMS_DECRYPT_ACTIONS,
  OBJECT_CREATE_ACTIONS,
} from '../iam-actions.ts';
import { acknowledgeWildcardResources } from '../nag.ts';

export interface HostPrincipalProps {
  readonly cluster: string;
  readonly bucket: s3.IBucket;
  /** `ec2`: an instance profile; `account`: principals of this account allowed by their own policies. */
  readonly assumedBy: 'ec2' | 'account';
}

/**
 * The identity of one database host: it may put objects and read and list its own prefix
 * (`v1/<cluster>/*`), and nothing else: it encrypts to public age recipients, so it needs no KMS
 * action at all. Deletes, any PutObject without `If-None-Match` (an overwrite), SSE-C uploads,
 * anything that would make an overwrite or deletion possible, governance bypass and kms:Decrypt are denied explicitly,
 * so they stay denied whatever else gets attached to the role later.
 */
export class HostPrincipal extends Construct {
  readonly role: iam.Role;
  readonly instanceProfile?: iam.InstanceProfile;

  constructor(scope: Construct, id: string, props: HostPrincipalProps) {
    super(scope, id);
    const prefix = clusterPrefix(props.cluster);
    const ownObjects = props.bucket.arnForObjects(`${prefix}*`);
    const policy = new iam.PolicyDocument({
      statements: [
        new iam.PolicyStatement({
          sid: 'WriteAndReadOwnPrefix',
          actions: [...HOST_OBJECT_ACTIONS],
          resources: [ownObjects],
        }),
        new iam.PolicyStatement({
          sid: 'ListOwnPrefix',
          actions: [...HOST_LIST_ACTIONS],
          resources: [props.bucket.bucketArn],
          conditions: { StringLike: { 's3:prefix': [`${prefix}*`] } },
        }),
        new iam.PolicyStatement({
          sid: 'DenyDeleteOverwriteAndProtectionChanges',
          effect: iam.Effect.DENY,
          actions: [...HOST_DENIED_S3_ACTIONS],
          resources: [props.bucket.bucketArn, props.bucket.arnForObjects('*')],
        }),
        new iam.PolicyStatement({
          sid: 'DenyWritesOutsideOwnPrefix',
          effect: iam.Effect.DENY,
          actions: [...OBJECT_CREATE_ACTIONS],
          notResources: [ownObjects],
        }),
        // The same denies as the ingest bucket policy's, so they hold even on a bucket that lacks it.
        new iam.PolicyStatement({
          sid: 'DenyOverwrites',
          effect: iam.Effect.DENY,
          actions: [...OBJECT_CREATE_ACTIONS],
          resources: [props.bucket.arnForObjects('*')],
          conditions: HOST_OVERWRITE_CONDITIONS,
        }),
        new iam.PolicyStatement({
          sid: 'DenySseC',
          effect: iam.Effect.DENY,
          actions: [...OBJECT_CREATE_ACTIONS],
          resources: [props.bucket.arnForObjects('*')],
          conditions: HOST_SSE_C_CONDITIONS,
        }),
        new iam.PolicyStatement({
          sid: 'DenyDecrypt',
          effect: iam.Effect.DENY,
          actions: [...KMS_DECRYPT_ACTIONS],
          resources: ['*'],
        }),
      ],
    });
    this.role = new iam.Role(this, 'Role', {
      description: `pgkeep host of cluster ${props.cluster}: write-only backups under ${prefix}`,
      assumedBy:
        props.assumedBy === 'ec2'
          ? new iam.ServicePrincipal('ec2.amazonaws.com')
          : new iam.AccountRootPrincipal(),
      inlinePolicies: { PgkeepHost: policy },
    });
    if (props.assumedBy === 'ec2')
      this.instanceProfile = new iam.InstanceProfile(this, 'Profile', { role: this.role });
    acknowledgeWildcardResources(
      this.role,
      "the host writes new keys under its own cluster's prefix (v1/<cluster>/*) and reads them back; the names are not known in advance, and the prefix is the boundary",
      ownObjects,
    );
  }
}

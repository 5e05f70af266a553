import { RemovalPolicy, SecretValue } from 'aws-cdk-lib';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import type { TargetConfig } from '../config.ts';
import { acknowledge } from '../nag.ts';

export interface TargetCredentialsProps {
  readonly targets: TargetConfig[];
}

/** The JSON an operator puts into a target's secret. */
export const TARGET_SECRET_TEMPLATE = { accessKeyId: '', secretAccessKey: '' };

/**
 * One Secrets Manager secret per S3-compatible provider, created with empty fields: the stack never
 * sees the provider's keys, the operator puts them in after deploying
 * (`aws secretsmanager put-secret-value`). Retained on delete, like everything stateful.
 */
export class TargetCredentials extends Construct {
  /** Target name -> its secret. AWS targets have none (the replication role writes with IAM). */
  readonly secrets: ReadonlyMap<string, secretsmanager.Secret>;
  /** Target name -> the secret of its delete-capable key, for targets that name one. */
  readonly deleteSecrets: ReadonlyMap<string, secretsmanager.Secret>;

  constructor(scope: Construct, id: string, props: TargetCredentialsProps) {
    super(scope, id);
    const secrets = new Map<string, secretsmanager.Secret>();
    const deleteSecrets = new Map<string, secretsmanager.Secret>();
    const make = (id: string, name: string, what: string) => {
      const secret = new secretsmanager.Secret(this, id, {
        secretName: name,
        description: `pgkeep: ${what}; fill in after deploy`,
        // A placeholder with no secret in it; CloudFormation never overwrites the value the operator puts.
        secretStringValue: SecretValue.unsafePlainText(JSON.stringify(TARGET_SECRET_TEMPLATE)),
        removalPolicy: RemovalPolicy.RETAIN,
      });
      acknowledge(
        secret,
        "the secret holds a third-party provider's access key (B2, Wasabi, R2, MinIO); Secrets Manager cannot rotate it, the operator rotates it at the provider",
        'AwsSolutions-SMG4',
      );
      return secret;
    };
    for (const target of props.targets) {
      if (target.type !== 's3-compatible') continue;
      secrets.set(
        target.name,
        make(
          `Target-${target.name}`,
          target.credentialsSecretName,
          `access key of target "${target.name}" (${target.endpoint})`,
        ),
      );
      if (target.deleteCredentialsSecretName)
        deleteSecrets.set(
          target.name,
          make(
            `Target-${target.name}-Delete`,
            target.deleteCredentialsSecretName,
            `delete-capable access key of target "${target.name}" (${target.endpoint}), read only by retention's delete step`,
          ),
        );
    }
    this.deleteSecrets = deleteSecrets;
    this.secrets = secrets;
  }
}

import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import { Construct } from 'constructs';
import { KMS_ACCOUNT_ENCRYPT_ACTIONS, KMS_ADMIN_ACTIONS, KMS_DECRYPT_ACTIONS } from '../iam-actions.ts';

export interface BackupKeyProps {
  /**
   * ARNs of the only principals that may decrypt (the verification task role, an optional operator
   * role). Tokens are fine; the principals need not exist yet (they are matched by condition).
   */
  readonly decryptorRoleArns: string[];
  /** @default 'alias/<id>' is not created; no alias */
  readonly alias?: string;
}

/**
 * The KMS key that seals the automation identity (`pgkeep keygen --kms-key`): an operator seals it
 * once, only the verification task roles (and an operator role) unseal it. Hosts never use the key:
 * they encrypt to the identity's public recipient. The key policy says so itself, with an explicit deny for every other
 * principal, so a broad IAM policy elsewhere in the account cannot read backups.
 */
export class BackupKey extends Construct {
  readonly key: kms.Key;

  constructor(scope: Construct, id: string, props: BackupKeyProps) {
    super(scope, id);
    if (props.decryptorRoleArns.length === 0)
      throw new Error('BackupKey needs at least one decryptor role ARN');
    const account = new iam.AccountRootPrincipal();
    const onlyDecryptors = { 'aws:PrincipalArn': props.decryptorRoleArns };
    const policy = new iam.PolicyDocument({
      statements: [
        new iam.PolicyStatement({
          sid: 'KeyAdministrationWithoutDecrypt',
          principals: [account],
          actions: [...KMS_ADMIN_ACTIONS],
          resources: ['*'],
        }),
        new iam.PolicyStatement({
          sid: 'AccountPrincipalsMaySeal',
          principals: [account],
          actions: [...KMS_ACCOUNT_ENCRYPT_ACTIONS],
          resources: ['*'],
        }),
        new iam.PolicyStatement({
          sid: 'OnlyDecryptorsMayDecrypt',
          principals: [account],
          actions: [...KMS_DECRYPT_ACTIONS],
          resources: ['*'],
          conditions: { ArnEquals: onlyDecryptors },
        }),
        new iam.PolicyStatement({
          sid: 'DenyDecryptToEveryoneElse',
          effect: iam.Effect.DENY,
          principals: [new iam.AnyPrincipal()],
          actions: [...KMS_DECRYPT_ACTIONS],
          resources: ['*'],
          conditions: { ArnNotEquals: onlyDecryptors },
        }),
      ],
    });
    this.key = new kms.Key(this, 'Key', {
      description: 'pgkeep backup key: seals the automation identity; only restore verification may unseal',
      enableKeyRotation: true,
      rotationPeriod: Duration.days(365),
      policy,
      removalPolicy: RemovalPolicy.RETAIN,
      pendingWindow: Duration.days(30),
      alias: props.alias,
    });
  }
}

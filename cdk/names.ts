/**
 * Names that two stacks must agree on without a reference between them (a reference would make a
 * dependency cycle: the stateful key policy names the stateless verification role).
 */
import { Aws } from 'aws-cdk-lib';

/** The verification task role's name; region-qualified because IAM names are account-wide. */
/**
 * The ingest bucket's name, fixed by account and region so the pipeline stack can refer to it
 * without a CloudFormation export (exports block updates of the stateful stack, and they make
 * cdk-nag findings differ between construction and synthesis).
 */
export function ingestBucketName(pipelineName: string): string {
  return `${pipelineName}-ingest-${Aws.ACCOUNT_ID}-${Aws.REGION}`;
}

export function verificationTaskRoleName(pipelineName: string): string {
  return `${pipelineName}-verify-task-${Aws.REGION}`;
}

export function verificationTaskRoleArn(pipelineName: string): string {
  return `arn:${Aws.PARTITION}:iam::${Aws.ACCOUNT_ID}:role/${verificationTaskRoleName(pipelineName)}`;
}

export { METRIC_NAMESPACE, METRICS } from '../lambdas/lib/metrics.ts';

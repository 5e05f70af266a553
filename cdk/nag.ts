/**
 * cdk-nag (v3) acknowledgments, kept next to the resources they are about. Every acknowledgment
 * names the exact finding and says why it is acceptable; test/cdk/nag.test.ts fails on any finding
 * without one.
 */
import { Stack, Validations } from 'aws-cdk-lib';
import { flattenCfnReference } from 'cdk-nag/lib/utils/flatten-cfn-reference.js';
import type { IConstruct } from 'constructs';

/** Acknowledges findings (`AwsSolutions-SMG4`, `AwsSolutions-IAM5[Resource::*]`) on `scope` and everything under it. */
export function acknowledge(scope: IConstruct, reason: string, ...ids: string[]): void {
  Validations.of(scope).acknowledge(...ids.map((id) => ({ id, reason })));
}

/**
 * The id of an IAM5 (wildcard) finding about `resource`, a string that may hold tokens
 * (`bucket.arnForObjects('v1/*')`), written the way cdk-nag writes it.
 */
export function wildcardResourceFinding(scope: IConstruct, resource: string): string {
  return `AwsSolutions-IAM5[Resource::${flattenCfnReference(Stack.of(scope).resolve(resource))}]`;
}

/** Acknowledges IAM5 findings about each of `resources` under `scope`. */
export function acknowledgeWildcardResources(
  scope: IConstruct,
  reason: string,
  ...resources: string[]
): void {
  acknowledge(scope, reason, ...resources.map((resource) => wildcardResourceFinding(scope, resource)));
}

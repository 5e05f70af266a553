/**
 * Names of deployed pipeline parts that both the CDK app and the CLI need: the CLI derives them from
 * the replication state machine's ARN instead of asking for one more setting.
 */

/** The Express state machine that runs replication started by a manifest, beside the Standard one. */
export function manifestRunsStateMachineName(replicationStateMachineName: string): string {
  return `${replicationStateMachineName}-manifests`;
}

/**
 * Where a state machine's execution events go. An Express execution is seen only there (Step
 * Functions lists and describes Standard executions only). The `/aws/vendedlogs/` prefix is the one
 * AWS recommends for vended logs: one resource policy covers it, instead of each log group growing
 * the account's CloudWatch Logs resource policy, which has a size limit.
 */
export function stateMachineLogGroupName(stateMachineName: string): string {
  return `/aws/vendedlogs/states/${stateMachineName}`;
}

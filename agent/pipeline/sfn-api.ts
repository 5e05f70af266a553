/** The real {@link StepFunctionsApi}: @aws-sdk/client-sfn, imported only by `pgkeep pipeline`. */
import {
  DescribeExecutionCommand,
  ListExecutionsCommand,
  SFNClient,
  StartExecutionCommand,
} from '@aws-sdk/client-sfn';
import type { ExecutionStatus, StepFunctionsApi } from './runs.ts';

/** Step Functions in `region`, with the SDK's credential chain and endpoint settings (AWS_ENDPOINT_URL_SFN). */
export function awsStepFunctions(region: string): StepFunctionsApi {
  const client = new SFNClient({ region, maxAttempts: 3 });
  return {
    async listExecutions(stateMachineArn, maxResults) {
      const out = await client.send(new ListExecutionsCommand({ stateMachineArn, maxResults }));
      return (out.executions ?? []).map((e) => ({ executionArn: e.executionArn as string }));
    },
    async describeExecution(executionArn) {
      const out = await client.send(new DescribeExecutionCommand({ executionArn }));
      return {
        executionArn,
        name: out.name ?? executionArn.split(':').at(-1) ?? executionArn,
        status: out.status as ExecutionStatus,
        startDate: out.startDate ?? new Date(0),
        ...(out.stopDate ? { stopDate: out.stopDate } : {}),
        ...(out.output !== undefined ? { output: out.output } : {}),
        ...(out.error !== undefined ? { error: out.error } : {}),
        ...(out.cause !== undefined ? { cause: out.cause } : {}),
      };
    },
    async startExecution(stateMachineArn, name, input) {
      const out = await client.send(new StartExecutionCommand({ stateMachineArn, name, input }));
      return { executionArn: out.executionArn as string };
    },
  };
}

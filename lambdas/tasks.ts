/**
 * Every pipeline task by handler id: the work side of the registry (lambdas/registry.ts), for
 * running the pipeline off Lambda (tests, the demo, the soak) through the same input parsing as
 * the deployed handlers. The `satisfies` makes a registered id without a task a type error.
 */
import { measureFreshnessTask } from './freshness/measure.ts';
import type { Task } from './lib/task.ts';
import type { HandlerId } from './registry.ts';
import { copyBatchTask } from './replication/copy-batch.ts';
import { copyLargeTask } from './replication/copy-large.ts';
import { copyManifestsTask } from './replication/copy-manifests.ts';
import { planCopiesTask } from './replication/plan-copies.ts';
import { deleteBatchTask } from './retention/delete-batch.ts';
import { planIngestPruneTask } from './retention/plan-ingest-prune.ts';
import { planRetentionTask } from './retention/plan-retention.ts';
import { pickBackupTask } from './verification/pick-backup.ts';
import { recordResultTask } from './verification/record-result.ts';

export const TASKS = {
  'replication/plan-copies': planCopiesTask,
  'replication/copy-batch': copyBatchTask,
  'replication/copy-manifests': copyManifestsTask,
  'replication/copy-large': copyLargeTask,
  'retention/plan-retention': planRetentionTask,
  'retention/delete-batch': deleteBatchTask,
  'retention/plan-ingest-prune': planIngestPruneTask,
  'verification/pick-backup': pickBackupTask,
  'verification/record-result': recordResultTask,
  'freshness/measure': measureFreshnessTask,
} as const satisfies { readonly [I in HandlerId]: Task<I, unknown> };

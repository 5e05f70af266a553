/**
 * The "Copy large objects" fan-out: one object too large for one invocation is copied in steps,
 * each its own Task so none needs more than a Lambda's 15 minutes:
 *
 * - `start` ("Start large copy"): creates the multipart upload at the target and returns the copy
 *   state and the part numbers in batches (the items of the "Copy part ranges" Map);
 * - `parts` ("Copy part range"): streams one batch of part ranges (ranged GETs into UploadPart);
 * - `complete` ("Complete large copy"): completes the upload, then verifies the copy at the target
 *   against the manifest's size and sha256 (the provider's checksum when it has one, else one
 *   streamed read); a mismatch fails the copy (and, copies never being replaced, later runs
 *   report the bad copy until someone deletes it at the target);
 * - `abort` ("Abort large copy"): aborts the upload after a failure so no parts are left behind.
 *
 * Every input and output is small JSON: the copy state, part numbers, part ETags.
 */

import { clusterOfKey } from '../../core/keys.ts';
import type { LocationFactory } from '../lib/locations.ts';
import { logDecision } from '../lib/log.ts';
import { copyTuning, findTarget, type PipelineEnv } from '../lib/pipeline-env.ts';
import {
  abortCopy,
  type CompletedPart,
  CopyIntegrityError,
  type CopyState,
  completeCopy,
  copyParts,
  MAX_PART_SIZE_BYTES,
  objectIn,
  partNumberBatches,
  startCopy,
} from '../lib/s3-copy.ts';
import { defineTask, lambdaHandler } from '../lib/task.ts';
import { verifyCopy } from '../lib/verify-copy.ts';
import type { CopyLargeInput } from './types.ts';

/** Parts per large copy at most: keeps every part's ETag within a Step Functions payload (~70 bytes each). */
export const MAX_LARGE_COPY_PARTS = 1000;
const MIB = 1024 * 1024;

export type CopyLargeOutput =
  | { readonly copy: CopyState; readonly partNumberBatches: number[][] }
  | CompletedPart[]
  | { readonly copied: 1; readonly bytes: number; readonly verifiedBy: string }
  | { readonly aborted: true };

export async function copyLarge(
  input: CopyLargeInput,
  env: PipelineEnv,
  locations: LocationFactory,
): Promise<CopyLargeOutput> {
  const tuning = copyTuning(env);
  const target = await locations.target(findTarget(env, input.target));
  const ingest = await locations.ingest();
  const source = objectIn(ingest.storage, input.object.key);
  const copy = objectIn(target.storage, input.object.key);
  switch (input.step) {
    case 'start': {
      // Parts grow (whole MiB) so the ETags of every part fit the payload of "Complete large copy".
      const partSizeBytes = Math.min(
        MAX_PART_SIZE_BYTES,
        Math.max(tuning.copyPartBytes, Math.ceil(input.object.sizeBytes / MAX_LARGE_COPY_PARTS / MIB) * MIB),
      );
      const state = await startCopy(source, copy, { partSizeBytes });
      if (state.sizeBytes !== input.object.sizeBytes)
        throw new CopyIntegrityError(
          `ingest ${input.object.key} has ${state.sizeBytes} bytes now, ${input.object.sizeBytes} when planned; the next run copies it again`,
        );
      return { copy: state, partNumberBatches: partNumberBatches(state, tuning.partsPerInvocation) };
    }
    case 'parts':
      return copyParts(source, copy, input.copy as CopyState, input.partNumbers);
    case 'complete': {
      await completeCopy(copy, input.copy as CopyState, input.parts.flat());
      const check = await verifyCopy(copy, {
        sizeBytes: input.object.sizeBytes,
        ...(input.object.sha256 ? { sha256: input.object.sha256 } : {}),
      });
      if (check.status !== 'ok')
        throw new CopyIntegrityError(
          `large copy of ${input.object.key} at ${target.name} failed its check (${JSON.stringify(check)}); copies are never replaced, so later runs report it as a conflict: delete it at ${target.name} to have it copied again`,
        );
      logDecision('copied', {
        cluster: clusterOfKey(input.object.key),
        key: input.object.key,
        sizeBytes: input.object.sizeBytes,
        verifiedBy: check.method,
      });
      return { copied: 1, bytes: input.object.sizeBytes, verifiedBy: check.method };
    }
    case 'abort':
      await abortCopy(copy, input.copy.uploadId);
      return { aborted: true };
  }
}

export const copyLargeTask = defineTask({
  id: 'replication/copy-large',
  run: (input, { env, locations }) => copyLarge(input, env, locations),
});

export const handler = lambdaHandler(copyLargeTask);

/**
 * Handler inputs come from the state machine definition; a mismatch between the two is a
 * deployment bug that retrying cannot fix, so it fails at once naming the field.
 */
import type { z } from 'zod';

export class InvalidHandlerInputError extends Error {
  override name = 'InvalidHandlerInputError';
}

/** Validates `input` against `schema`; the error names the handler and the first offending field. */
export function parseInput<T>(schema: z.ZodType<T>, input: unknown, handlerId: string): T {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  throw new InvalidHandlerInputError(
    `invalid input to ${handlerId} at ${issue?.path.join('.') || '(root)'}: ${issue?.message}; the state machine definition and the handler disagree`,
  );
}

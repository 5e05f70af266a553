/**
 * Handler inputs come from the state machine definition; a mismatch between the two is a
 * deployment bug that retrying cannot fix, so it fails at once naming the field.
 */
import { type z, z as zod } from 'zod';

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

/**
 * A schema for a handler with several entries, chosen by the input's shape (`pick`) before parsing,
 * so an error names the field of the entry that was meant rather than a union's summary.
 */
export function schemaByShape<S extends z.ZodType>(pick: (input: unknown) => S): z.ZodType<z.output<S>> {
  return zod.unknown().transform((input, context) => {
    const result = pick(input).safeParse(input);
    if (result.success) return result.data as z.output<S>;
    for (const issue of result.error.issues) context.addIssue({ ...issue, input: undefined } as never);
    return zod.NEVER;
  });
}

/** Whether `input` is an object carrying `field`: how a multi-entry handler tells its entries apart. */
export function hasField(input: unknown, field: string): boolean {
  return typeof input === 'object' && input !== null && field in input;
}

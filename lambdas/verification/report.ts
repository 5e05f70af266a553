/**
 * The part of a restore-verification report (v1/<cluster>/verify/<run-id>.json) that the pipeline
 * reads: which backup, and whether it passed. The task writes more (checks, timings); extra fields
 * are kept, missing required ones make the report invalid.
 */
import { z } from 'zod';

export const VerifyReportSchema = z.looseObject({
  backupId: z.string().min(1),
  passed: z.boolean(),
  /** One line for people: what failed, or what was checked. */
  summary: z.string().optional(),
});
export type VerifyReport = z.infer<typeof VerifyReportSchema>;

/** Parses a report; undefined when it is not one (a report that cannot be read proves nothing). */
export function parseVerifyReport(json: string): VerifyReport | undefined {
  try {
    const result = VerifyReportSchema.safeParse(JSON.parse(json));
    return result.success ? result.data : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The pipeline's decision log: one JSON line per decision (planned N copies, copied or skipped an
 * object, advanced a cursor, deleted or kept a backup, picked a backup to verify), each naming the
 * run, the handler, the cluster and the target, so one execution can be followed through every
 * Lambda with a CloudWatch Logs Insights query. Lines go to stdout, where Lambda's log agent takes
 * them as they are (the functions use the JSON log format).
 *
 * The run's context is held for the duration of one task (AsyncLocalStorage), so the work code
 * logs without threading a logger through every call; outside a task (unit tests calling a work
 * function directly) nothing is written.
 */
import { AsyncLocalStorage } from 'node:async_hooks';

export interface RunLogContext {
  /** The Step Functions execution name, or the Lambda request id when the payload has none. */
  readonly run: string;
  /** The handler id (`replication/copy-batch`). */
  readonly handler: string;
  /** The target the task works on, when it has one. */
  readonly target?: string;
  /** Where the lines go. */
  readonly write: (line: string) => void;
}

export type LogValue = string | number | boolean | undefined;

const current = new AsyncLocalStorage<RunLogContext>();

/** Field names never written, whatever the caller passes: a log line must not carry a credential. */
const SECRET_FIELD = /secret|password|credential|token|authorization|session/i;

/** Runs `work` with `context` as the decision log's run. */
export function withRunLog<T>(context: RunLogContext, work: () => Promise<T>): Promise<T> {
  return current.run(context, work);
}

/**
 * Writes one decision (`copied`, `planned copies`, `cursor advanced`…) with its fields, under the
 * current run's id, handler and target (a field may name another target). Outside a run, nothing.
 */
export function logDecision(
  decision: string,
  fields: { readonly cluster?: string; readonly [field: string]: LogValue },
): void {
  const context = current.getStore();
  if (!context) return;
  const safe = Object.fromEntries(
    Object.entries(fields).filter(([name, value]) => value !== undefined && !SECRET_FIELD.test(name)),
  );
  context.write(
    `${JSON.stringify({
      timestamp: new Date().toISOString(),
      level: 'INFO',
      decision,
      run: context.run,
      handler: context.handler,
      ...(context.target !== undefined ? { target: context.target } : {}),
      ...safe,
    })}\n`,
  );
}

/** The run id a payload carries (`run`, set by every pipeline Lambda step), if any. */
export function runIdOf(input: unknown): string | undefined {
  const run = (input as { run?: unknown } | null | undefined)?.run;
  return typeof run === 'string' && run !== '' ? run : undefined;
}

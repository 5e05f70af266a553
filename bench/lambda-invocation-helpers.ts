/**
 * The "Lambda" of `npm run bench lambda-duration`: a process of its own, started in a CPU cgroup
 * (test/support/cpu-cgroup.ts), that loads the replication handlers as a cold start would and
 * then invokes registered tasks one after another, as the state machine would, through the same
 * input parsing as the deployed handler (test/support/local-pipeline.ts `localTask`). Its buckets
 * are reached through latency proxies. It prints one JSON line: each invocation's wall time and
 * output, the handlers' load time, its CPU time and peak RSS.
 */
import type { PipelineEnv } from '../lambdas/lib/pipeline-env.ts';
import type { HandlerId } from '../lambdas/registry.ts';

/**
 * The heap limits Lambda's Node.js runtime starts a function with (its bootstrap: a tenth of the
 * memory for the young generation, half of that per semi-space, the rest for the old one). V8
 * collects sooner under them than unlimited, so the peak RSS measured is the one Lambda would see.
 */
export function lambdaHeapFlags(memoryMb: number): string[] {
  const newSpace = Math.floor(memoryMb / 10);
  return [`--max-semi-space-size=${Math.floor(newSpace / 2)}`, `--max-old-space-size=${memoryMb - newSpace}`];
}

export interface Invocation {
  readonly handler: HandlerId;
  readonly input: unknown;
}

export interface InvocationsInput {
  /** Endpoints (proxies) of ingest and of each target's bucket. */
  readonly ingest: string;
  readonly targets: Readonly<Record<string, { readonly endpoint: string; readonly bucket: string }>>;
  readonly env: PipelineEnv;
  /** The clock the handlers plan against, in ms since the epoch. */
  readonly nowMs: number;
  readonly invocations: readonly Invocation[];
}

export interface InvocationsOutput {
  /** Loading the handler modules: a cold start's init, not in the invocations' times. */
  readonly initSeconds: number;
  readonly seconds: number[];
  readonly outputs: unknown[];
  readonly cpuSeconds: number;
  readonly maxRssMb: number;
}

async function invokeAll(input: InvocationsInput): Promise<InvocationsOutput> {
  const cpu = process.cpuUsage();
  const loading = performance.now();
  const { localTask } = await import('../test/support/local-pipeline.ts');
  const { s3rverStorage } = await import('../test/support/s3-server.ts');
  const initSeconds = (performance.now() - loading) / 1000;
  const ingest = { name: 'ingest', storage: s3rverStorage(input.ingest, 'ingest') };
  const locations = {
    ingest: async () => ingest,
    target: async (target: { name: string }) => {
      const at = input.targets[target.name];
      if (!at) throw new Error(`no endpoint for target ${target.name}`);
      // dr-aws honours If-None-Match, as AWS S3 does; the other target is not known to.
      return {
        name: target.name,
        storage: s3rverStorage(at.endpoint, at.bucket),
        conditionalWrites: target.name === 'dr-aws',
      };
    },
  };
  const deps = { env: input.env, locations, policies: {}, now: () => new Date(input.nowMs) };
  const seconds: number[] = [];
  const outputs: unknown[] = [];
  for (const invocation of input.invocations) {
    const start = performance.now();
    outputs.push(await localTask(invocation.handler, deps)(invocation.input));
    seconds.push((performance.now() - start) / 1000);
  }
  const used = process.cpuUsage(cpu);
  return {
    initSeconds,
    seconds,
    outputs,
    cpuSeconds: (used.user + used.system) / 1e6,
    maxRssMb: process.resourceUsage().maxRSS / 1024,
  };
}

if (process.argv[2] === '--invoke') {
  const output = await invokeAll(JSON.parse(process.argv[3] ?? '{}') as InvocationsInput);
  process.stdout.write(`${JSON.stringify(output)}\n`);
  process.exit(0);
}

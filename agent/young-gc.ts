/**
 * Keeps streaming memory flat. Every chunk that flows through a pipeline (pipe reads, zstd output,
 * ciphertext) is a short-lived Buffer whose bytes live outside V8's heap. V8 lets such external
 * memory grow by ~64 MB before it collects, which alone would take the agent past its 150 MB
 * budget. A young-generation collection (a scavenge, well under a millisecond here) every few MiB
 * frees those buffers at once: measured on 315 MB through sha256+zstd+age, peak RSS went from
 * +70 MB to +25 MB over the baseline for 27 ms of collection in total.
 */

type GcFunction = (options?: { type?: 'minor' | 'major' }) => void;

let gc: GcFunction | null | undefined;

function collector(): GcFunction | null {
  if (gc === undefined) {
    try {
      // Loaded only here: node:v8 brings ~30 Node modules that a command storing no stream never needs.
      process.getBuiltinModule('node:v8').setFlagsFromString('--expose-gc');
      gc = process.getBuiltinModule('node:vm').runInNewContext('gc') as GcFunction;
    } catch {
      gc = null;
    }
  }
  return gc;
}

/** Returns a function to call with each chunk's size; it scavenges every `everyBytes`. */
export function youngGcEvery(everyBytes = 8 * 1024 * 1024): (chunkBytes: number) => void {
  const run = collector();
  if (!run) return () => {};
  let since = 0;
  return (chunkBytes) => {
    since += chunkBytes;
    if (since >= everyBytes) {
      since = 0;
      run({ type: 'minor' });
    }
  };
}

/**
 * How far behind ingest each cluster's copy at one target is, as replication itself last saw it,
 * so freshness reads one object per target instead of listing and HEADing per cluster.
 * docs/architecture.md, "Replication at scale".
 *
 * Every replication round that planned a cluster in full records, per cluster:
 *
 * - `listedAt`: when the round started listing ingest. Everything ingest stored before it was
 *   listed by that round or was behind the cursor, so already at the target;
 * - `oldestMissing`: when ingest stored the oldest object of that listing that was still not at the
 *   target when the round ended (a copy that failed its check, a manifest left waiting); absent when
 *   every object listed reached the target.
 *
 * The lag freshness publishes follows from that and from what ingest stored after `listedAt`
 * ({@link lagSeconds}): a run that fails or never runs writes nothing, so the record ages and the
 * lag grows for as long as hosts keep writing. Pure: no I/O. The pipeline stores the records under
 * `pipeline/`, which no host can write.
 */
import { z } from 'zod';

const EntrySchema = z.strictObject({
  listedAt: z.iso.datetime(),
  oldestMissing: z.iso.datetime().optional(),
});
export const TargetLagSchema = z.strictObject({
  format: z.literal('pgkeep.replication-lag.v1'),
  clusters: z.record(z.string(), EntrySchema),
});

export type LagEntry = z.infer<typeof EntrySchema>;
export type TargetLag = z.infer<typeof TargetLagSchema>;

export const EMPTY_LAG: TargetLag = { format: 'pgkeep.replication-lag.v1', clusters: {} };

export function parseTargetLag(json: string, source: string): TargetLag {
  const parsed = TargetLagSchema.safeParse(JSON.parse(json));
  if (!parsed.success)
    throw new Error(
      `invalid replication lag record ${source}: ${parsed.error.issues[0]?.message ?? 'wrong shape'}; delete it and the next replication run writes it again`,
    );
  return parsed.data;
}

/**
 * Whether `incoming` replaces `current`: only a later listing does (on a tie, the one with the older
 * missing object). Runs overlap (a manifest's run beside a scheduled one), and one that listed
 * earlier may finish later; its record is older news and must not replace what a later listing saw.
 */
export function supersedes(incoming: LagEntry, current: LagEntry | undefined): boolean {
  if (current === undefined) return true;
  if (incoming.listedAt !== current.listedAt) return incoming.listedAt > current.listedAt;
  return (incoming.oldestMissing ?? '~') < (current.oldestMissing ?? '~');
}

/** `current` with each entry of `incoming` that {@link supersedes} the one it has. */
export function mergeLag(current: TargetLag, incoming: Readonly<Record<string, LagEntry>>): TargetLag {
  const clusters = { ...current.clusters };
  for (const [cluster, entry] of Object.entries(incoming))
    if (supersedes(entry, clusters[cluster])) clusters[cluster] = entry;
  return { ...current, clusters };
}

/**
 * The cluster's replication lag at `now`, in seconds: the age of the oldest object ingest holds and
 * the target may lack. That is `oldestMissing` when the record names one; else, when ingest stored
 * anything after `listedAt` (`newestStoredAt`, from freshness's own walk), `listedAt` itself: no
 * replication run has listed that object yet, so it counts as missing from the moment the last one
 * listed (at most one schedule period early while runs succeed; exact enough to alarm on when
 * they stop); else 0, the target has all ingest has.
 *
 * A listing gives LastModified in whole seconds, so an object stored in the second the listing
 * started may or may not have been listed: it counts as unlisted (a lag shown until the next run
 * lists again, rather than one hidden).
 */
export function lagSeconds(entry: LagEntry, newestStoredAt: Date | undefined, now: Date): number {
  const listedAt = new Date(entry.listedAt);
  const listedSecond = Math.floor(listedAt.getTime() / 1000) * 1000;
  const unlisted =
    newestStoredAt !== undefined && newestStoredAt.getTime() >= listedSecond ? listedAt : undefined;
  const missing = entry.oldestMissing === undefined ? undefined : new Date(entry.oldestMissing);
  const oldest = [missing, unlisted].filter((t): t is Date => t !== undefined).sort((a, b) => +a - +b)[0];
  return oldest === undefined ? 0 : Math.max(0, (now.getTime() - oldest.getTime()) / 1000);
}

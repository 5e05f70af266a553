/**
 * Which timeline "restore to latest" follows. PostgreSQL's `recovery_target_timeline = 'latest'`
 * takes the highest timeline whose history file the archive holds; a copy of the cluster that
 * was restored, promoted and archived into the same repository makes that the copy's timeline,
 * and recovery then replays the copy's writes instead of production's.
 *
 * The rule: the primary's timeline is the timeline of the WAL segment the repository stored last
 * (the storage's own modification time, which the host cannot set), ties broken by the higher
 * timeline. The primary archives continuously, so its segments are the newest; a copy that
 * archived once and stopped falls behind as soon as the primary completes its next segment, and a
 * real failover's new timeline becomes the newest with the new primary's first segment. Only
 * complete segments count: a promoted server archives the old timeline's last segment as
 * `.partial` and its history file, neither of which says it is still writing.
 */
import { parseWalKey } from './keys.ts';
import { parseWalFileName } from './wal-names.ts';

export interface StoredObject {
  readonly key: string;
  readonly lastModified: Date;
}

/** The primary's timeline by the rule above; undefined when no complete segment is stored. */
export function primaryTimeline(objects: Iterable<StoredObject>): number | undefined {
  let best: { time: number; timeline: number } | undefined;
  for (const object of objects) {
    const name = parseWalKey(object.key)?.walFileName;
    const wal = name === undefined ? undefined : parseWalFileName(name);
    if (wal?.kind !== 'segment') continue;
    const time = object.lastModified.getTime();
    if (!best || time > best.time || (time === best.time && wal.timeline > best.timeline)) {
      best = { time, timeline: wal.timeline };
    }
  }
  return best?.timeline;
}

/**
 * Listings that merge WAL bundle members (storage/wal-bundles.ts) into a driver's listing, in key
 * order: a member that is also a real object is yielded once, as the real object.
 */
import type { BundleMember } from '../core/wal-bundle.ts';
import type { ListOptions, ObjectInfo } from './storage.ts';

/** A member as found in its bundle: where to read it, and the bundle's time as its own. */
export interface LocatedMember extends BundleMember {
  readonly bundle: string;
  readonly lastModified: Date;
}

/** Real objects and members (ascending) merged by key; a member that is also a real object is dropped. */
export async function* mergeMembers(
  real: AsyncIterable<ObjectInfo>,
  members: AsyncIterable<LocatedMember>,
  prefix: string,
  options: ListOptions,
  asObject: (member: LocatedMember) => ObjectInfo,
): AsyncIterable<ObjectInfo> {
  const it = members[Symbol.asyncIterator]();
  let next = await nextMember(it, prefix, options);
  for await (const object of real) {
    while (next && next.key < object.key) {
      yield asObject(next);
      next = await nextMember(it, prefix, options);
    }
    if (next && next.key === object.key) next = await nextMember(it, prefix, options);
    yield object;
  }
  while (next) {
    yield asObject(next);
    next = await nextMember(it, prefix, options);
  }
}

/**
 * As {@link mergeMembers}, for members that become known while the real listing goes on: `pending`
 * (kept sorted by the caller) only ever receives keys after the real listing's current one.
 */
export async function* mergeLiveMembers(
  real: AsyncIterable<ObjectInfo>,
  pending: LocatedMember[],
  prefix: string,
  asObject: (member: LocatedMember) => ObjectInfo,
): AsyncIterable<ObjectInfo> {
  let last: string | undefined;
  function* take(upTo?: string): Generator<ObjectInfo> {
    while (pending.length > 0 && (upTo === undefined || (pending[0] as LocatedMember).key <= upTo)) {
      const member = pending.shift() as LocatedMember;
      if (member.key !== upTo && member.key !== last && member.key.startsWith(prefix)) {
        last = member.key;
        yield asObject(member);
      }
    }
  }
  for await (const object of real) {
    yield* take(object.key);
    yield object;
    last = object.key;
  }
  yield* take();
}

async function nextMember(
  it: AsyncIterator<LocatedMember>,
  prefix: string,
  options: ListOptions,
): Promise<LocatedMember | undefined> {
  for (let r = await it.next(); !r.done; r = await it.next()) {
    const member = r.value;
    if (!member.key.startsWith(prefix)) continue;
    if (options.startAfter !== undefined && member.key <= options.startAfter) continue;
    return member;
  }
  return undefined;
}

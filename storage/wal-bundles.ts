/**
 * The one reader of WAL bundles (core/wal-bundle.ts): a Storage that presents each member of a
 * bundle at a target as if it were the per-segment object ingest holds, so the agent (wal-fetch,
 * its prefetcher, restore, `check --archive`, verify) and the pipeline (retention, reconciliation,
 * freshness) read a bundled target as a per-segment one (docs/architecture.md, "WAL bundles at targets").
 *
 * - `list` yields the real objects and, merged in key order, the members of the bundles that hold
 *   keys under the prefix; a key that is both a real object and a member is yielded once (the real
 *   one). A listing of one WAL file name (`…/wal/<tl>/<name>-`, what wal-fetch asks) finds its
 *   bundle with one listing after `<name>`; any other listing reads the index of every bundle it
 *   covers (one small ranged GET each, cached for the life of the object).
 * - `get`/`head` of a member key read its byte range of the bundle. A member's bytes are checked
 *   against the sha256 the index records before any of them is returned, and the index against
 *   the digest in the bundle's key: a bundle changed at the provider fails with
 *   {@link BundleIntegrityError} naming the bundle, never with WAL other than what was archived.
 * - `put` and `delete` go to the driver unchanged: bundles are written only by replication and
 *   deleted only whole, by retention.
 *
 * Bundles of one timeline never overlap except that a later one may repeat an earlier one's
 * segments from the same first segment (a run whose cursor was not committed bundles them again):
 * so the first bundle after `<name>` that starts after `<name>` ends the search.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import {
  BundleIntegrityError,
  bundleDigest,
  LOCATOR_BYTES,
  type ParsedBundleKey,
  parseBundleIndex,
  parseLocator,
  parseWalBundleKey,
  walBundlesPrefix,
  walNameOfKey,
} from '../core/wal-bundle.ts';
import type { ByteRange, ListOptions, ObjectInfo, PutOptions, Storage } from './storage.ts';
import { ObjectNotFoundError, StorageError } from './storage.ts';
import { type LocatedMember, mergeLiveMembers, mergeMembers } from './wal-bundle-listing.ts';

export { BundleIntegrityError } from '../core/wal-bundle.ts';
export type { LocatedMember } from './wal-bundle-listing.ts';

/** The members a caller expects a bundle to hold, in key order (see the constructor). */
export type ExpectedMembers = (
  bundle: ParsedBundleKey,
) => readonly { readonly key: string; readonly length: number }[];

/** Bytes of a bundle's tail read at once: the locator and, for a bundle of ~100 members, the index. */
const TAIL_BYTES = 16 * 1024;
/** Cached indexes: a month of bundles of one cluster is ~4,300. */
const MAX_CACHED_BUNDLES = 20_000;

const WAL_LISTING = /^(v1\/[^/]+\/)wal\/(.*)$/;
/** A listing of one cluster that holds its WAL keys: `v1/<cluster>/`, up to `v1/<cluster>/wal`. */
const CLUSTER_LISTING = /^v1\/([^/]+)\/(?:w|wa|wal)?$/;
/** Prefixes above every cluster: their listings hold many clusters' bundles and WAL keys. */
const ABOVE_CLUSTER = /^(?:|v|v1|v1\/[^/]*)$/;

/** Presents WAL bundle members as per-segment objects (see the module comment). */
export class WalBundleStorage implements Storage {
  readonly displayUrl: string;
  readonly inner: Storage;
  readonly #indexes = new Map<string, Promise<LocatedMember[]>>();
  readonly #members = new Map<string, LocatedMember>();
  /** The indexes read so far, for what must be looked up without waiting. */
  readonly #read = new Map<string, LocatedMember[]>();

  readonly #expected: ExpectedMembers | undefined;
  readonly #skipUnexpected: boolean;
  readonly #readAheadBytes: number;
  /** The run of members read ahead (see readAhead). */
  #ahead: { members: string[]; bytes: Promise<Map<string, Buffer | Error>> } | undefined;
  /** Per cluster and timeline, the bundles the last lookup by name found (see membersNamed). */
  readonly #scans = new Map<string, { from: string; bundles: (ObjectInfo & { last: string })[] }>();

  /**
   * `expectedMembers`: for a listing only, the members a caller expects of a bundle (ingest's
   * segments in its range, with their sizes); when they digest to the digest in the bundle's key,
   * they are its members and its index is not read (a daily reconciliation reads no index unless
   * something differs). Such members are listed, never read: a `get` still reads the index.
   *
   * `skipUnexpected`: a bundle the caller expects no member of (ingest pruned its range) lists
   * none and its index is not read.
   *
   * `readAheadBytes`: a `get` of a member also reads the members after it in its bundle, up to
   * this many bytes, with the same GET, and keeps them for their own `get` (the prefetcher's).
   * @default 0 - each member is read on its own
   */
  constructor(
    inner: Storage,
    options: {
      readonly expectedMembers?: ExpectedMembers;
      readonly skipUnexpected?: boolean;
      readonly readAheadBytes?: number;
    } = {},
  ) {
    this.inner = inner;
    this.displayUrl = inner.displayUrl;
    this.#expected = options.expectedMembers;
    this.#skipUnexpected = options.skipUnexpected === true;
    this.#readAheadBytes = options.readAheadBytes ?? 0;
  }

  put(key: string, body: Readable, options?: PutOptions): Promise<void> {
    return this.inner.put(key, body, options);
  }

  delete(key: string): Promise<void> {
    return this.inner.delete(key);
  }

  async serverTime(): Promise<Date | undefined> {
    return await this.inner.serverTime?.();
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    const real = await this.inner.head(key);
    if (real) return real;
    const member = await this.findMember(key);
    return member ? { key, sizeBytes: member.length, lastModified: member.lastModified } : undefined;
  }

  async get(key: string, range?: ByteRange): Promise<Readable> {
    const known = this.#members.get(key);
    if (!known) {
      try {
        return await this.inner.get(key, range);
      } catch (error) {
        if (!(error instanceof ObjectNotFoundError)) throw error;
        const member = await this.findMember(key);
        if (!member) throw error;
        return this.readMember(member, range);
      }
    }
    return this.readMember(known, range);
  }

  async *list(prefix: string, options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    const wal = WAL_LISTING.exec(prefix);
    if (wal) {
      const members = this.membersUnder(prefix, wal[1] as string, wal[2] as string);
      yield* mergeMembers(this.inner.list(prefix, options), members, prefix, options, (m) =>
        this.asObject(m),
      );
      return;
    }
    const cluster = CLUSTER_LISTING.exec(prefix)?.[1];
    if (cluster) {
      yield* mergeMembers(this.inner.list(prefix, options), this.members(cluster), prefix, options, (m) =>
        this.asObject(m),
      );
      return;
    }
    if (!ABOVE_CLUSTER.test(prefix)) {
      yield* this.inner.list(prefix, options);
      return;
    }
    if (options.startAfter !== undefined)
      throw new Error(
        `listing ${prefix} after ${options.startAfter} with WAL bundles is not supported: list one cluster's prefix (v1/<cluster>/) instead`,
      );
    // A cluster's bundles (`…/wal-bundles/`) sort before its WAL (`…/wal/`), so their members
    // are known before the first WAL key of the same cluster comes.
    const pending: LocatedMember[] = [];
    const self = this;
    async function* real(): AsyncIterable<ObjectInfo> {
      for await (const object of self.inner.list(prefix)) {
        if (parseWalBundleKey(object.key)) {
          pending.push(...(await self.listedMembers(object)));
          pending.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
        }
        yield object;
      }
    }
    yield* mergeLiveMembers(real(), pending, prefix, (m) => this.asObject(m));
  }

  /** Every member of the bundles under `bundlePrefix` (all of a cluster's when omitted), in key order. */
  async *members(cluster: string, timeline?: string): AsyncIterable<LocatedMember> {
    const all: LocatedMember[] = [];
    for await (const object of this.inner.list(walBundlesPrefix(cluster, timeline)))
      if (parseWalBundleKey(object.key)) all.push(...(await this.listedMembers(object)));
    all.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    let previous: string | undefined;
    for (const member of all) {
      if (member.key === previous) continue;
      previous = member.key;
      yield member;
    }
  }

  /** The member at `key`, from a bundle that holds its WAL file name; undefined when none does. */
  async findMember(key: string): Promise<LocatedMember | undefined> {
    const known = this.#members.get(key);
    if (known) return known;
    const wal = walNameOfKey(key);
    const cluster = key.split('/')[1];
    if (!wal || !cluster) return undefined;
    for (const member of await this.membersNamed(cluster, wal.timeline, wal.name))
      if (member.key === key) return member;
    return undefined;
  }

  /**
   * The members with WAL file name `name`: one listing of the timeline's bundles after `name`, or
   * none when the last listing's bundles hold it (the prefetcher asks for one name after another).
   * That listing found every bundle holding its name (they share their first segment), so for a
   * later name it still knows every bundle holding that one up to their last segment.
   */
  async membersNamed(cluster: string, timeline: string, name: string): Promise<LocatedMember[]> {
    const scope = `${cluster}/${timeline}`;
    const last = this.#scans.get(scope);
    let holding = last && last.from <= name ? last.bundles.filter((b) => name <= b.last) : [];
    if (holding.length === 0) {
      holding = [];
      const prefix = walBundlesPrefix(cluster, timeline);
      for await (const object of this.inner.list(prefix, { startAfter: `${prefix}${name}` })) {
        const bundle = parseWalBundleKey(object.key);
        if (!bundle) continue;
        if (bundle.first > name) break;
        holding.push({ ...object, last: bundle.last });
      }
      if (holding.length > 0) this.#scans.set(scope, { from: name, bundles: holding });
    }
    const found: LocatedMember[] = [];
    for (const object of holding)
      for (const member of await this.bundleMembers(object))
        if (walNameOfKey(member.key)?.name === name && !found.some((m) => m.key === member.key))
          found.push(member);
    return found;
  }

  /** The members of one bundle for a listing: those the caller expected when they match its key. */
  private async listedMembers(bundle: ObjectInfo): Promise<LocatedMember[]> {
    const parsed = parseWalBundleKey(bundle.key);
    const expected = parsed && this.#expected?.(parsed);
    if (expected && expected.length === 0 && this.#skipUnexpected) return [];
    if (!parsed || !expected || expected.length === 0 || bundleDigest(expected) !== parsed.digest)
      return this.bundleMembers(bundle);
    let offset = 0;
    return expected.map((m) => {
      const member = { key: m.key, offset, length: m.length, sha256: '', bundle: bundle.key };
      offset += m.length;
      return { ...member, lastModified: bundle.lastModified };
    });
  }

  /** The members of one bundle (its index read once, checked, and cached). */
  bundleMembers(bundle: ObjectInfo): Promise<LocatedMember[]> {
    let members = this.#indexes.get(bundle.key);
    if (!members) {
      if (this.#indexes.size >= MAX_CACHED_BUNDLES) {
        this.#indexes.clear();
        this.#members.clear();
        this.#read.clear();
      }
      members = this.readIndex(bundle);
      members.catch(() => this.#indexes.delete(bundle.key));
      this.#indexes.set(bundle.key, members);
    }
    return members;
  }

  private async readIndex(bundle: ObjectInfo): Promise<LocatedMember[]> {
    const { key, sizeBytes } = bundle;
    if (sizeBytes < LOCATOR_BYTES)
      throw new BundleIntegrityError(
        `WAL bundle ${key} at ${this.displayUrl} has ${sizeBytes} bytes, too few for a bundle: it was cut short at the target; restore from another target`,
      );
    const tailStart = Math.max(0, sizeBytes - TAIL_BYTES);
    let tail = await buffer(await this.inner.get(key, { start: tailStart, end: sizeBytes - 1 }));
    const locator = parseLocator(key, tail.subarray(tail.length - LOCATOR_BYTES), sizeBytes);
    if (locator.offset < tailStart)
      tail = Buffer.concat([
        await buffer(await this.inner.get(key, { start: locator.offset, end: tailStart - 1 })),
        tail,
      ]);
    const from = tail.length - LOCATOR_BYTES - locator.length;
    const index = tail.subarray(from, tail.length - LOCATOR_BYTES);
    const located = parseBundleIndex(key, index, locator.offset).map((m) => ({
      ...m,
      bundle: key,
      lastModified: bundle.lastModified,
    }));
    for (const member of located) if (!this.#members.has(member.key)) this.#members.set(member.key, member);
    this.#read.set(key, located);
    return located;
  }

  private async readMember(member: LocatedMember, range?: ByteRange): Promise<Readable> {
    const bytes = (await this.readAhead(member)) ?? (await this.readRun(member, [member])).get(member.key);
    if (bytes instanceof Error) throw bytes;
    if (bytes === undefined) throw new ObjectNotFoundError(member.key);
    if (range && range.start >= bytes.length)
      throw new StorageError(
        `byte range ${range.start}-${range.end} starts past the end of ${member.key} (${bytes.length} bytes): ask for a range within the object`,
      );
    return Readable.from([range ? bytes.subarray(range.start, range.end + 1) : bytes]);
  }

  /**
   * With `readAheadBytes`, a member and those after it in its bundle (up to that many bytes) are
   * read with one GET and kept until asked for (each once): the prefetcher then reads a bundle of
   * ~10 segments with one request. Only the newest such run is kept, so memory stays bounded.
   */
  private async readAhead(member: LocatedMember): Promise<Buffer | Error | undefined> {
    // Everything up to setting #ahead is synchronous: the prefetcher's concurrent reads share one run.
    const ahead = this.#ahead;
    if (ahead?.members.includes(member.key)) {
      const kept = await ahead.bytes;
      const found = kept.get(member.key);
      if (found !== undefined) {
        kept.delete(member.key);
        return found;
      }
    }
    if (this.#readAheadBytes <= 0 || member.sha256 === '') return undefined;
    const all = this.#read.get(member.bundle) ?? [member];
    const run: LocatedMember[] = [];
    let bytes = 0;
    for (const next of all.slice(all.findIndex((m) => m.key === member.key))) {
      if (run.length > 0 && bytes + next.length > this.#readAheadBytes) break;
      run.push(next);
      bytes += next.length;
    }
    if (run.length < 2) return undefined;
    const read = this.readRun(member, run);
    this.#ahead = { members: run.map((m) => m.key), bytes: read };
    // A failed read is not kept: the next attempt reads again.
    read.catch(() => {
      if (this.#ahead?.bytes === read) this.#ahead = undefined;
    });
    const got = (await read).get(member.key);
    (await read).delete(member.key);
    return got;
  }

  /** The bytes of consecutive members `run` with one ranged GET, each checked against its sha256. */
  private async readRun(
    asked: LocatedMember,
    run: readonly LocatedMember[],
  ): Promise<Map<string, Buffer | Error>> {
    const first = run[0] as LocatedMember;
    const lastMember = run[run.length - 1] as LocatedMember;
    const end = lastMember.offset + lastMember.length;
    const bytes =
      end === first.offset
        ? Buffer.alloc(0)
        : await buffer(await this.inner.get(asked.bundle, { start: first.offset, end: end - 1 }));
    const out = new Map<string, Buffer | Error>();
    for (const m of run) {
      const own = bytes.subarray(m.offset - first.offset, m.offset - first.offset + m.length);
      const digest = createHash('sha256').update(own).digest('hex');
      out.set(
        m.key,
        own.length === m.length && digest === m.sha256
          ? own
          : new BundleIntegrityError(
              `WAL bundle ${m.bundle} at ${this.displayUrl}: member ${m.key} reads as ${own.length} bytes with sha256 ${digest}, but its index says ${m.length} bytes with sha256 ${m.sha256}; the bundle was changed at the target; restore from another target`,
            ),
      );
    }
    return out;
  }

  /** The members under a WAL prefix (`<cluster>/wal/<rest>`), in key order. */
  private async *membersUnder(
    prefix: string,
    clusterRoot: string,
    rest: string,
  ): AsyncIterable<LocatedMember> {
    const cluster = clusterRoot.split('/')[1] as string;
    const timeline = /^([0-9A-F]{8})\/([0-9A-F]{24})-?$/.exec(rest);
    if (timeline?.[1] && timeline[2]) {
      const named = await this.membersNamed(cluster, timeline[1], timeline[2]);
      yield* named.filter((m) => m.key.startsWith(prefix)).sort((a, b) => (a.key < b.key ? -1 : 1));
      return;
    }
    const folder = /^([0-9A-F]{8})\//.exec(rest)?.[1];
    for await (const member of this.members(cluster, folder)) if (member.key.startsWith(prefix)) yield member;
  }

  private asObject(member: LocatedMember): ObjectInfo {
    // A member known only from the caller's expectation has no sha256 yet: a read finds its index.
    if (member.sha256 !== '') this.#members.set(member.key, member);
    return { key: member.key, sizeBytes: member.length, lastModified: member.lastModified };
  }
}

/**
 * `storage` with WAL bundle members presented as objects (the same object when it already is one);
 * `readAheadBytes` as for the constructor.
 */
export function withWalBundles(
  storage: Storage,
  options: { readonly readAheadBytes?: number } = {},
): WalBundleStorage {
  return storage instanceof WalBundleStorage ? storage : new WalBundleStorage(storage, options);
}

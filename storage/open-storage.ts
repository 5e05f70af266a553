/**
 * Repository URLs → storage drivers.
 *
 *   file:///var/backups/pgkeep
 *   s3://bucket/prefix
 *   s3://bucket/prefix?endpoint=http://127.0.0.1:9000&path-style=true&region=us-east-1&checksum=when-required
 *
 * S3 query options: `endpoint` (http(s) URL of an S3-compatible service; default AWS S3),
 * `path-style` (true|false, default false), `region`, `checksum` (when-required|when-supported,
 * default when-required), `part-size-mib` (5–5120, default 16) and `queue-size` (parts in flight,
 * 1–16, default 1), which set memory per put and the largest object (see s3-storage.ts),
 * `conditional-writes` (true|false, default true). Credentials never go
 * in the URL: the AWS SDK's standard chain supplies them (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
 * AWS_PROFILE, instance and task roles).
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DeferredStorage } from './deferred-storage.ts';
import { FileStorage } from './file-storage.ts';
import {
  DEFAULT_PART_SIZE_MIB,
  DEFAULT_QUEUE_SIZE,
  MAX_PART_SIZE_MIB,
  MAX_QUEUE_SIZE,
  MIN_PART_SIZE_MIB,
  type S3StorageOptions,
  s3DisplayUrl,
} from './s3-options.ts';
import type { Storage } from './storage.ts';

/** A repository URL that names something pgkeep cannot use; the message says what and how to fix it. */
export class InvalidStorageUrlError extends Error {
  override name = 'InvalidStorageUrlError';
}

/** A parsed repository URL. */
export type StorageUrl =
  | { readonly scheme: 'file' /** Absolute directory path. */; readonly path: string }
  | ({ readonly scheme: 's3' } & S3StorageOptions & {
        readonly prefix: string;
        readonly forcePathStyle: boolean;
        readonly checksum: 'when-required' | 'when-supported';
        readonly partSizeMiB: number;
        readonly queueSize: number;
        readonly conditionalWrites: boolean;
      });

const S3_OPTIONS = [
  'endpoint',
  'path-style',
  'region',
  'checksum',
  'part-size-mib',
  'queue-size',
  'conditional-writes',
] as const;
const EXAMPLE_S3 = 's3://<bucket>/<prefix>?endpoint=https://s3.example.com&path-style=true';

/** Parses and checks a repository URL without touching the network or the disk. */
export function parseStorageUrl(url: string): StorageUrl {
  const text = url.trim();
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(text)?.[1]?.toLowerCase();
  if (scheme === 'file') return parseFileUrl(text);
  if (scheme === 's3') return parseS3Url(text);
  if (scheme === undefined && text.startsWith('/')) {
    throw new InvalidStorageUrlError(
      `repository "${text}" is a path, not a URL: write file://${text} for a directory or ${EXAMPLE_S3} for a bucket`,
    );
  }
  const shown = scheme === undefined ? `repository "${text}"` : `repository URL scheme "${scheme}:"`;
  throw new InvalidStorageUrlError(
    `${shown} is not supported: use file:///absolute/path or ${EXAMPLE_S3} (S3-compatible services such as MinIO, B2, Wasabi and R2 use s3:// with endpoint=)`,
  );
}

/** The driver for a repository URL (parsed or not). Connects lazily: use {@link probeStorage} to check it answers. */
export function openStorage(url: string | StorageUrl): Storage {
  const parsed = typeof url === 'string' ? parseStorageUrl(url) : url;
  if (parsed.scheme === 'file') return new FileStorage(parsed.path);
  return new DeferredStorage(
    s3DisplayUrl(parsed),
    async () => new (await import('./s3-storage.ts')).S3Storage(parsed),
  );
}

/** What {@link probeStorage} found. */
export interface ProbeResult {
  readonly displayUrl: string;
  /** The first key under the prefix, if there is any. */
  readonly firstKey?: string;
}

/**
 * Checks that the repository answers by listing at most one key under `prefix`. Resolves when it
 * does; otherwise rejects with an error whose class says what is wrong and whose message says
 * how to fix it: {@link RepositoryNotFoundError} (bucket or directory missing),
 * {@link AccessDeniedError} (credentials missing, refused or lacking a permission),
 * {@link StorageUnavailableError} (endpoint unreachable, timing out or failing), or another
 * {@link StorageError}.
 */
export async function probeStorage(storage: Storage, prefix = ''): Promise<ProbeResult> {
  for await (const object of storage.list(prefix)) {
    return { displayUrl: storage.displayUrl, firstKey: object.key };
  }
  return { displayUrl: storage.displayUrl };
}

function parseFileUrl(text: string): StorageUrl {
  if (!/^file:\/\//i.test(text)) {
    throw new InvalidStorageUrlError(
      `file repository URL "${text}" needs "file://" and an absolute path: write file:///absolute/path (three slashes)`,
    );
  }
  let url: URL;
  try {
    url = new URL(text);
  } catch (error) {
    throw new InvalidStorageUrlError(
      `file repository URL "${text}" cannot be parsed: write file:///absolute/path`,
      {
        cause: error,
      },
    );
  }
  if (url.host !== '') {
    throw new InvalidStorageUrlError(
      `file repository URL "${text}" names host "${url.host}": relative paths and remote hosts are not supported; write file:///absolute/path (three slashes), e.g. file:///var/backups/pgkeep`,
    );
  }
  if (url.search !== '' || url.hash !== '') {
    throw new InvalidStorageUrlError(
      `file repository URL "${text}" has options ("${url.search}${url.hash}"), but file:// takes none: remove them`,
    );
  }
  const directory = path.resolve(fileURLToPath(url));
  if (directory === path.parse(directory).root) {
    throw new InvalidStorageUrlError(
      `file repository URL "${text}" is the file system root: use a directory of its own, e.g. file:///var/backups/pgkeep`,
    );
  }
  return { scheme: 'file', path: directory };
}

function parseS3Url(text: string): StorageUrl {
  if (!/^s3:\/\//i.test(text)) {
    throw new InvalidStorageUrlError(`s3 repository URL "${text}" needs "s3://": write ${EXAMPLE_S3}`);
  }
  let url: URL;
  try {
    url = new URL(text);
  } catch (error) {
    throw new InvalidStorageUrlError(`s3 repository URL cannot be parsed: write ${EXAMPLE_S3}`, {
      cause: error,
    });
  }
  if (url.username !== '' || url.password !== '') {
    // Never echo the URL: it holds a secret.
    throw new InvalidStorageUrlError(
      's3 repository URL contains credentials ("user:secret@"): remove them, and give pgkeep AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in its environment instead',
    );
  }
  const bucket = url.hostname;
  if (bucket === '') {
    throw new InvalidStorageUrlError(`s3 repository URL "${text}" has no bucket: write ${EXAMPLE_S3}`);
  }
  if (url.port !== '') {
    throw new InvalidStorageUrlError(
      `s3 repository URL "${text}" has a port after the bucket: the bucket goes after s3:// and the server in endpoint=, e.g. s3://${bucket}/?endpoint=http://127.0.0.1:${url.port}&path-style=true`,
    );
  }
  if (!/^[a-zA-Z0-9][a-zA-Z0-9._-]{1,61}[a-zA-Z0-9]$/.test(bucket) || bucket.includes('..')) {
    throw new InvalidStorageUrlError(
      `bucket name "${bucket}" is not valid: use 3-63 lower-case letters, digits, dots and hyphens, starting and ending with a letter or digit`,
    );
  }
  if (url.hash !== '') {
    throw new InvalidStorageUrlError(`s3 repository URL "${text}" has a fragment ("${url.hash}"): remove it`);
  }
  // The raw path, because URL parsing quietly resolves "a/../b" to "b".
  const prefix = parsePrefix(/^s3:\/\/[^/?#]*([^?#]*)/i.exec(text)?.[1] ?? '', text);

  const values = new Map<string, string>();
  for (const [name, value] of url.searchParams) {
    if (!(S3_OPTIONS as readonly string[]).includes(name)) {
      throw new InvalidStorageUrlError(
        `unknown option "${name}" in s3 repository URL: known options are ${S3_OPTIONS.join(', ')}`,
      );
    }
    if (values.has(name))
      throw new InvalidStorageUrlError(`option "${name}" appears twice in the s3 repository URL: keep one`);
    values.set(name, value);
  }
  const endpoint = values.has('endpoint') ? parseEndpoint(values.get('endpoint') ?? '') : undefined;
  const region = values.get('region');
  if (region !== undefined && !/^[a-z0-9][a-z0-9-]*$/.test(region)) {
    throw new InvalidStorageUrlError(
      `region "${region}" is not valid: use a region name such as us-east-1, eu-central-1 or auto`,
    );
  }
  const checksum = values.get('checksum') ?? 'when-required';
  if (checksum !== 'when-required' && checksum !== 'when-supported') {
    throw new InvalidStorageUrlError(
      `checksum "${checksum}" is not valid: use checksum=when-required (most S3-compatible services) or checksum=when-supported (AWS S3)`,
    );
  }
  const partSizeText = values.get('part-size-mib');
  const partSizeMiB = partSizeText === undefined ? DEFAULT_PART_SIZE_MIB : Number(partSizeText);
  if (
    !/^\d+$/.test(partSizeText ?? '16') ||
    partSizeMiB < MIN_PART_SIZE_MIB ||
    partSizeMiB > MAX_PART_SIZE_MIB
  ) {
    throw new InvalidStorageUrlError(
      `part-size-mib "${partSizeText}" is not valid: use a whole number of MiB from ${MIN_PART_SIZE_MIB} to ${MAX_PART_SIZE_MIB} (the largest object is 10,000 parts)`,
    );
  }
  const queueSizeText = values.get('queue-size');
  const queueSize = queueSizeText === undefined ? DEFAULT_QUEUE_SIZE : Number(queueSizeText);
  if (!/^\d+$/.test(queueSizeText ?? '1') || queueSize < 1 || queueSize > MAX_QUEUE_SIZE) {
    throw new InvalidStorageUrlError(
      `queue-size "${queueSizeText}" is not valid: use a whole number of parts in flight from 1 to ${MAX_QUEUE_SIZE}`,
    );
  }
  return {
    scheme: 's3',
    bucket,
    prefix,
    ...(endpoint !== undefined ? { endpoint } : {}),
    ...(region !== undefined ? { region } : {}),
    forcePathStyle: parseBoolean(values, 'path-style', false),
    checksum,
    partSizeMiB,
    queueSize,
    conditionalWrites: parseBoolean(values, 'conditional-writes', true),
  };
}

function parsePrefix(pathname: string, text: string): string {
  let decoded: string;
  try {
    decoded = decodeURIComponent(pathname);
  } catch (error) {
    throw new InvalidStorageUrlError(
      `s3 repository URL "${text}" has a badly percent-encoded prefix: fix the %-escapes`,
      {
        cause: error,
      },
    );
  }
  const trimmed = decoded.replace(/^\/+/, '').replace(/\/+$/, '');
  if (trimmed === '') return '';
  for (const segment of trimmed.split('/')) {
    if (segment === '' || segment === '.' || segment === '..') {
      throw new InvalidStorageUrlError(
        `prefix "${trimmed}" in s3 repository URL has an empty, "." or ".." segment: write it like backups/pgkeep`,
      );
    }
  }
  return `${trimmed}/`;
}

function parseEndpoint(value: string): string {
  let endpoint: URL;
  try {
    endpoint = new URL(value);
  } catch (error) {
    throw new InvalidStorageUrlError(
      `endpoint "${value}" is not a URL: write endpoint=https://host[:port] (percent-encode it if it has its own "?" or "&")`,
      { cause: error },
    );
  }
  if (endpoint.username !== '' || endpoint.password !== '') {
    throw new InvalidStorageUrlError(
      'endpoint in the s3 repository URL contains credentials: remove them, and give pgkeep AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in its environment instead',
    );
  }
  if (endpoint.protocol !== 'http:' && endpoint.protocol !== 'https:') {
    throw new InvalidStorageUrlError(
      `endpoint "${value}" uses ${endpoint.protocol}: it must be http:// or https://, e.g. endpoint=https://s3.us-west-004.backblazeb2.com`,
    );
  }
  if (
    (endpoint.pathname !== '/' && endpoint.pathname !== '') ||
    endpoint.search !== '' ||
    endpoint.hash !== ''
  ) {
    throw new InvalidStorageUrlError(
      `endpoint "${value}" has a path or query: give only scheme, host and port (endpoint=${endpoint.origin}); the bucket goes after s3://`,
    );
  }
  return endpoint.origin;
}

function parseBoolean(values: Map<string, string>, name: string, fallback: boolean): boolean {
  const value = values.get(name);
  if (value === undefined) return fallback;
  if (value === 'true') return true;
  if (value === 'false') return false;
  throw new InvalidStorageUrlError(
    `option ${name}="${value}" is not valid: use ${name}=true or ${name}=false`,
  );
}

// The error classes callers of probeStorage() and the drivers catch.
export {
  AccessDeniedError,
  ObjectExistsError,
  ObjectNotFoundError,
  RepositoryNotFoundError,
  StorageError,
  StorageUnavailableError,
} from './storage.ts';

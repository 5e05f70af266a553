/**
 * S3 SDK errors → the typed storage errors of storage.ts, with messages that name the bucket or
 * object and say how to fix it. Apart from the driver so the mapping can be read (and grown) alone.
 */
import { isTransientFailure } from './failure.ts';
import {
  AccessDeniedError,
  ClockSkewError,
  ObjectExistsError,
  ObjectNotFoundError,
  RepositoryNotFoundError,
  StorageError,
  StorageUnavailableError,
} from './storage.ts';

export interface SdkError {
  name?: string;
  message?: string;
  code?: string;
  $metadata?: { httpStatusCode?: number };
  $retryable?: unknown;
}

/** Where a request went, for messages. */
export interface S3ErrorContext {
  readonly bucket: string;
  /** Key prefix inside the bucket: empty, or ending with "/". */
  readonly prefix: string;
  /** The endpoint, or "AWS S3". */
  readonly endpoint: string;
  /** The repository URL without credentials. */
  readonly displayUrl: string;
}

/** Maps an SDK or network error of `action` on `key` to a typed storage error (a StorageError passes through). */
export function mapS3Error(
  where: S3ErrorContext,
  error: unknown,
  action: 'read' | 'write' | 'list' | 'delete',
  key: string,
  ifAbsent = false,
): Error {
  if (error instanceof StorageError) return error;
  const { name = 'Error', message = String(error), code, $metadata } = (error ?? {}) as SdkError;
  const status = $metadata?.httpStatusCode;
  const object = `s3://${where.bucket}/${where.prefix}${key}`;
  const options = { cause: error };
  if (name === 'NoSuchKey') return new ObjectNotFoundError(key, options);
  if (name === 'NoSuchBucket') {
    return new RepositoryNotFoundError(
      `bucket "${where.bucket}" does not exist at ${where.endpoint}: create it, or fix the bucket name in the repository URL`,
      options,
    );
  }
  if (status === 404) {
    // S3 always names what is missing; a bare 404 comes from something else (a website, a proxy).
    return new StorageError(
      `${where.endpoint} answered HTTP 404 without an S3 error code for ${action} of ${object}: check that endpoint= is the provider's S3 API endpoint and whether it needs path-style=true`,
      options,
    );
  }
  if (ifAbsent && (name === 'PreconditionFailed' || status === 412)) {
    return new ObjectExistsError(key, options);
  }
  if (ifAbsent && (name === 'NotImplemented' || status === 501)) {
    return new StorageError(
      `${where.endpoint} rejected a create-only write (If-None-Match: *) to ${object}: add conditional-writes=false to the repository URL`,
      options,
    );
  }
  if (name === 'ConditionalRequestConflict' || status === 409) {
    return new StorageUnavailableError(
      `a concurrent write to ${object} conflicted with this one: retry`,
      options,
    );
  }
  if (name === 'CredentialsProviderError' || /could not load credentials/i.test(message)) {
    return new AccessDeniedError(
      `no S3 credentials found for ${where.displayUrl}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in pgkeep's environment; credentials never go in the repository URL`,
      options,
    );
  }
  if (name === 'InvalidAccessKeyId') {
    return new AccessDeniedError(
      `${where.endpoint} does not know the access key in use: check AWS_ACCESS_KEY_ID (or the profile in AWS_PROFILE)`,
      options,
    );
  }
  if (name === 'SignatureDoesNotMatch') {
    return new AccessDeniedError(
      `${where.endpoint} rejected the request signature: check AWS_SECRET_ACCESS_KEY (or the profile) and the region`,
      options,
    );
  }
  if (name === 'ExpiredToken' || name === 'InvalidToken' || name === 'TokenRefreshRequired') {
    return new AccessDeniedError(
      `the session credentials for ${where.displayUrl} expired or are invalid: refresh them`,
      options,
    );
  }
  if (name === 'RequestTimeTooSkewed') {
    return new ClockSkewError(
      `${where.endpoint} refused the request because this host's clock (${new Date().toISOString()}) is too far from its own: set the clock right (NTP: timedatectl, chronyc tracking), then retry`,
      options,
    );
  }
  if (name === 'AccessDenied' || name === 'AllAccessDisabled' || status === 403) {
    return new AccessDeniedError(
      `access denied to ${action} ${object}: grant these credentials s3:${
        { read: 'GetObject', write: 'PutObject', list: 'ListBucket', delete: 'DeleteObject' }[action]
      } on the bucket (a missing key also reads as 403 without s3:ListBucket)`,
      options,
    );
  }
  if (name === 'PermanentRedirect' || name === 'AuthorizationHeaderMalformed' || status === 301) {
    return new StorageError(
      `bucket "${where.bucket}" is in another region than the one in use: set region=<the bucket's region> in the repository URL`,
      options,
    );
  }
  if (/region is missing/i.test(message)) {
    return new StorageError(
      `no region for ${where.displayUrl}: add region=<region> to the repository URL or set AWS_REGION`,
      options,
    );
  }
  if (isTransientFailure(error)) {
    const detail = code ?? (status !== undefined ? `HTTP ${status} ${name}` : name);
    return new StorageUnavailableError(
      `${where.endpoint} is unreachable or failing (${detail}) for ${action} of ${object}: check the endpoint URL and network, or retry later`,
      options,
    );
  }
  return new StorageError(`${action} of ${object} failed at ${where.endpoint}: ${name}: ${message}`, options);
}

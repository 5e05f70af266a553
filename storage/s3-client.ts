/**
 * The one way pgkeep builds an S3 client, for the agent's repositories and every Lambda's buckets
 * alike: bounded attempts, connect, request and idle timeouts on every call, and checksums only
 * where the provider needs them.
 */
import { S3Client } from '@aws-sdk/client-s3';
import type { S3ClientOptions } from './s3-options.ts';

/** Access keys for a provider outside AWS (a replication target's secret); never logged. */
export interface S3Credentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
}

/**
 * Builds an S3 client with pgkeep's defaults: bounded retries and timeouts, checksums only when
 * required.
 * @param credentials @default - the SDK's standard chain (environment, profile, instance or Lambda role)
 */
export function createS3Client(options: S3ClientOptions = {}, credentials?: S3Credentials): S3Client {
  const checksum = options.checksum === 'when-supported' ? 'WHEN_SUPPORTED' : 'WHEN_REQUIRED';
  const region =
    options.region ??
    process.env.AWS_REGION ??
    process.env.AWS_DEFAULT_REGION ??
    (options.endpoint ? 'us-east-1' : undefined);
  return new S3Client({
    ...(options.endpoint ? { endpoint: options.endpoint } : {}),
    ...(region ? { region } : {}),
    ...(credentials ? { credentials: { ...credentials } } : {}),
    forcePathStyle: options.forcePathStyle ?? false,
    maxAttempts: options.maxAttempts ?? 3,
    requestChecksumCalculation: checksum,
    responseChecksumValidation: checksum,
    requestHandler: {
      connectionTimeout: options.connectionTimeoutMs ?? 3_000,
      // Until the response's headers, the request body included; a thrown TimeoutError, not a warning.
      requestTimeout: options.requestTimeoutMs ?? 900_000,
      throwOnRequestTimeout: true,
      // socketTimeout is an inactivity timeout: a large part on a slow link never trips it while bytes flow.
      socketTimeout: options.idleTimeoutMs ?? 60_000,
    },
  });
}

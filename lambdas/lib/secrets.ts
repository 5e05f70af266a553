/**
 * Reads an S3-compatible provider's access key from Secrets Manager (GetSecretValue through
 * @aws-sdk/client-secrets-manager, with the Lambda role's credentials). The secret value is
 * returned to the caller only: never logged, never put in an error message.
 */
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { z } from 'zod';
import { type ErrorFacts, isTransient } from '../../storage/failure.ts';
import { StorageUnavailableError } from '../../storage/storage.ts';

/** The JSON an operator puts into a target's secret (cdk/constructs/target-credentials.ts creates it empty). */
export const ProviderCredentialsSchema = z.object({
  accessKeyId: z.string().min(1, 'accessKeyId is empty: put the provider key into the secret'),
  secretAccessKey: z.string().min(1, 'secretAccessKey is empty: put the provider key into the secret'),
});
export type ProviderCredentials = z.infer<typeof ProviderCredentialsSchema>;

/** Something that returns a target's credentials; tests pass a fixed map instead of Secrets Manager. */
export type CredentialsReader = (secretArn: string) => Promise<ProviderCredentials>;

/** The secret is missing, empty or malformed: an operator has to fill it; retrying does not help. */
export class TargetCredentialsError extends Error {
  override name = 'TargetCredentialsError';
}

function regionOfSecret(secretArn: string): string {
  const region = secretArn.split(':')[3];
  if (!region) throw new TargetCredentialsError(`"${secretArn}" is not a Secrets Manager secret ARN`);
  return region;
}

export interface SecretsManagerReaderOptions {
  /** @default the SDK's endpoint for the secret's region */
  readonly endpoint?: string;
  /** @default the SDK's default chain (in Lambda: the function role from its environment) */
  readonly credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
}

/** A reader calling Secrets Manager's GetSecretValue for the secret's own region. */
export function secretsManagerReader(options: SecretsManagerReaderOptions = {}): CredentialsReader {
  const clients = new Map<string, SecretsManagerClient>();
  const clientFor = (region: string) => {
    let client = clients.get(region);
    if (!client) {
      client = new SecretsManagerClient({
        region,
        maxAttempts: 3,
        ...(options.endpoint ? { endpoint: options.endpoint } : {}),
        ...(options.credentials ? { credentials: options.credentials } : {}),
      });
      clients.set(region, client);
    }
    return client;
  };
  return async (secretArn) => {
    const region = regionOfSecret(secretArn);
    let secretString: string | undefined;
    try {
      const out = await clientFor(region).send(new GetSecretValueCommand({ SecretId: secretArn }), {
        abortSignal: AbortSignal.timeout(10_000),
      });
      secretString = out.SecretString;
    } catch (cause) {
      const { name = 'error', $metadata } = (cause ?? {}) as ErrorFacts;
      const status = $metadata?.httpStatusCode;
      // The SDK's error names the error type; its message never contains the secret value.
      const message = `cannot read secret ${secretArn}: ${name}${status ? ` (HTTP ${status})` : ''}`;
      throw isTransient(cause)
        ? new StorageUnavailableError(message, { cause })
        : new TargetCredentialsError(message, { cause });
    }
    if (secretString === undefined)
      throw new TargetCredentialsError(
        `secret ${secretArn} has no SecretString; put {"accessKeyId": "...", "secretAccessKey": "..."} into it`,
      );
    return parseCredentials(secretString, secretArn);
  };
}

/** The production reader. */
export const readSecretsManagerCredentials: CredentialsReader = secretsManagerReader();

/** Validates a secret's JSON text; the error names what is missing, never the values. */
export function parseCredentials(secretString: unknown, secretArn: string): ProviderCredentials {
  let value: unknown;
  try {
    value = JSON.parse(String(secretString));
  } catch {
    throw new TargetCredentialsError(
      `secret ${secretArn} is not JSON; put {"accessKeyId": "...", "secretAccessKey": "..."} into it`,
    );
  }
  const result = ProviderCredentialsSchema.safeParse(value);
  if (!result.success)
    throw new TargetCredentialsError(`secret ${secretArn}: ${result.error.issues[0]?.message ?? 'invalid'}`);
  return result.data;
}

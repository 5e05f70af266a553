/**
 * Reads an S3-compatible provider's access key from Secrets Manager.
 *
 * The project does not depend on @aws-sdk/client-secrets-manager, so this makes the one call it
 * needs (GetSecretValue, JSON protocol) signed with SigV4 by @smithy/signature-v4, which the S3
 * client already brings. Credentials come from the Lambda environment. The secret value is returned
 * to the caller only: never logged, never put in an error message.
 */
import { createHash, createHmac, type Hash, type Hmac } from 'node:crypto';
import { SignatureV4 } from '@smithy/signature-v4';
import { z } from 'zod';

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

class Sha256 {
  private readonly hash: Hash | Hmac;
  constructor(secret?: string | ArrayBuffer | ArrayBufferView) {
    this.hash =
      secret === undefined
        ? createHash('sha256')
        : createHmac(
            'sha256',
            typeof secret === 'string'
              ? secret
              : Buffer.from(secret as ArrayBuffer) /* key bytes, not logged */,
          );
  }
  update(data: string | ArrayBuffer | ArrayBufferView): void {
    this.hash.update(typeof data === 'string' ? data : Buffer.from(data as ArrayBuffer));
  }
  async digest(): Promise<Uint8Array> {
    return new Uint8Array(this.hash.digest());
  }
  reset(): void {
    throw new Error('not supported');
  }
}

function regionOfSecret(secretArn: string): string {
  const region = secretArn.split(':')[3];
  if (!region) throw new TargetCredentialsError(`"${secretArn}" is not a Secrets Manager secret ARN`);
  return region;
}

export interface SecretsManagerReaderOptions {
  /** @default `https://secretsmanager.<region of the secret>.amazonaws.com` */
  readonly endpoint?: string;
  /** @default the Lambda's own credentials, from its environment */
  readonly env?: NodeJS.ProcessEnv;
}

/** A reader calling Secrets Manager's GetSecretValue, signed with the Lambda role's credentials. */
export function secretsManagerReader(options: SecretsManagerReaderOptions = {}): CredentialsReader {
  return async (secretArn) => {
    const env = options.env ?? process.env;
    const region = regionOfSecret(secretArn);
    const accessKeyId = env.AWS_ACCESS_KEY_ID;
    const secretAccessKey = env.AWS_SECRET_ACCESS_KEY;
    if (!accessKeyId || !secretAccessKey)
      throw new TargetCredentialsError('no AWS credentials in the environment to read target secrets with');
    const signer = new SignatureV4({
      service: 'secretsmanager',
      region,
      credentials: { accessKeyId, secretAccessKey, sessionToken: env.AWS_SESSION_TOKEN },
      sha256: Sha256,
    });
    const url = new URL(options.endpoint ?? `https://secretsmanager.${region}.amazonaws.com`);
    const body = JSON.stringify({ SecretId: secretArn });
    const signed = await signer.sign({
      method: 'POST',
      protocol: url.protocol,
      hostname: url.hostname,
      port: url.port ? Number(url.port) : undefined,
      path: '/',
      query: {},
      headers: {
        host: url.host,
        'content-type': 'application/x-amz-json-1.1',
        'x-amz-target': 'secretsmanager.GetSecretValue',
      },
      body,
    });
    let response: Response;
    try {
      response = await fetch(new URL('/', url), {
        method: 'POST',
        headers: signed.headers as Record<string, string>,
        body,
        signal: AbortSignal.timeout(10_000),
      });
    } catch (cause) {
      const error = new TargetCredentialsError(`cannot reach Secrets Manager at ${url.origin}`, { cause });
      error.name = 'StorageUnavailableError';
      throw error;
    }
    const text = await response.text();
    if (!response.ok) {
      // The error body names the error type only; it never contains the secret value.
      const type = /"__type"\s*:\s*"([^"]+)"/.exec(text)?.[1] ?? `HTTP ${response.status}`;
      const error = new TargetCredentialsError(`cannot read secret ${secretArn}: ${type}`);
      if (response.status >= 500 || response.status === 429) error.name = 'StorageUnavailableError';
      throw error;
    }
    let secretString: unknown;
    try {
      secretString = (JSON.parse(text) as { SecretString?: unknown }).SecretString;
    } catch {
      throw new TargetCredentialsError(
        `Secrets Manager answered for ${secretArn} with something that is not JSON`,
      );
    }
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

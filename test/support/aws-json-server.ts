/**
 * A stand-in for an AWS service that speaks the AWS JSON protocol (KMS, Secrets Manager, Step
 * Functions), on 127.0.0.1: POST / with `X-Amz-Target: <Service>.<Operation>` and a JSON body; a
 * thrown error becomes `{"__type": error.name, "message"}` with HTTP 400, as the SDKs expect. The
 * real SDK clients reach it through AWS_ENDPOINT_URL_<SERVICE> or their `endpoint` option.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface AwsJsonRequest {
  /** `TrentService.Decrypt`, `secretsmanager.GetSecretValue`, `AWSStepFunctions.StartExecution`. */
  readonly target: string;
  readonly body: Record<string, unknown>;
  /** From the SigV4 Authorization header: who signed the request. */
  readonly accessKeyId: string;
}

export interface AwsJsonServer {
  readonly endpoint: string;
  stop(): Promise<void>;
}

/** An error the stand-in answers with; `name` is the AWS error code (`AccessDeniedException`). */
export class AwsFault extends Error {
  constructor(name: string, message: string) {
    super(message);
    this.name = name;
  }
}

export async function startAwsJsonServer(
  handle: (request: AwsJsonRequest) => Promise<unknown>,
  contentType = 'application/x-amz-json-1.1',
): Promise<AwsJsonServer> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const reply = (status: number, payload: unknown) => {
        res.writeHead(status, { 'content-type': contentType });
        res.end(JSON.stringify(payload));
      };
      let body: Record<string, unknown>;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>;
      } catch {
        reply(400, { __type: 'SerializationException', message: 'body is not JSON' });
        return;
      }
      const request = {
        target: String(req.headers['x-amz-target'] ?? ''),
        body,
        accessKeyId: /Credential=([^/]+)\//.exec(String(req.headers.authorization ?? ''))?.[1] ?? '',
      };
      handle(request).then(
        (out) => reply(200, out ?? {}),
        (error: Error) =>
          reply(error instanceof AwsFault ? 400 : 500, { __type: error.name, message: error.message }),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Secrets Manager's GetSecretValue over `secrets` (ARN -> SecretString). */
export function startLocalSecretsManager(secrets: ReadonlyMap<string, string>): Promise<AwsJsonServer> {
  return startAwsJsonServer(async ({ target, body }) => {
    if (target !== 'secretsmanager.GetSecretValue')
      throw new AwsFault(
        'UnsupportedOperationException',
        `${target} is not implemented by the local Secrets Manager`,
      );
    const arn = String(body.SecretId);
    const value = secrets.get(arn);
    if (value === undefined)
      throw new AwsFault('ResourceNotFoundException', `Secrets Manager can't find ${arn}`);
    return { ARN: arn, Name: arn.split(':')[6], SecretString: value, VersionId: 'v1' };
  });
}

// Reading a provider's key from Secrets Manager: a signed GetSecretValue call through
// @aws-sdk/client-secrets-manager (checked by a local HTTP endpoint standing in for Secrets
// Manager, which is not reachable here), and errors that say
// what to fix without ever containing the secret.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCredentials, secretsManagerReader } from '../../../lambdas/lib/secrets.ts';

const ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:pgkeep/targets/b2-AbCdEf';
const CREDENTIALS = {
  accessKeyId: 'AKIDEXAMPLE',
  secretAccessKey: 'wJalrXUtnFEMI',
  sessionToken: 'token',
};

let server: Server;
let endpoint: string;
const requests: { headers: IncomingMessage['headers']; body: string }[] = [];
let reply: { status: number; body: unknown } = { status: 200, body: {} };

beforeAll(async () => {
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => {
      body += chunk;
    });
    req.on('end', () => {
      requests.push({ headers: req.headers, body });
      res.writeHead(reply.status, { 'content-type': 'application/x-amz-json-1.1' });
      res.end(JSON.stringify(reply.body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

describe('secretsManagerReader', () => {
  it('sends a SigV4-signed GetSecretValue for the secret and returns its keys', async () => {
    reply = {
      status: 200,
      body: { SecretString: JSON.stringify({ accessKeyId: 'k', secretAccessKey: 's3cr3t' }) },
    };
    const credentials = await secretsManagerReader({ endpoint, credentials: CREDENTIALS })(ARN);
    expect(credentials).toEqual({ accessKeyId: 'k', secretAccessKey: 's3cr3t' });
    const request = requests.at(-1)!;
    expect(JSON.parse(request.body)).toEqual({ SecretId: ARN });
    expect(request.headers['x-amz-target']).toBe('secretsmanager.GetSecretValue');
    expect(request.headers['x-amz-security-token']).toBe('token');
    expect(request.headers.authorization).toMatch(
      /^AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE\/\d{8}\/eu-west-1\/secretsmanager\/aws4_request, SignedHeaders=[a-z0-9;-]*host[a-z0-9;-]*, Signature=[0-9a-f]{64}$/,
    );
  });

  it('an empty secret (as the stack creates it) says to fill it, without echoing anything', async () => {
    reply = { status: 200, body: { SecretString: JSON.stringify({ accessKeyId: '', secretAccessKey: '' }) } };
    await expect(secretsManagerReader({ endpoint, credentials: CREDENTIALS })(ARN)).rejects.toThrow(
      `secret ${ARN}: accessKeyId is empty: put the provider key into the secret`,
    );
  });

  it('access denied is a configuration error; throttling and 5xx are retryable', async () => {
    reply = { status: 400, body: { __type: 'AccessDeniedException', message: 'not allowed' } };
    await expect(secretsManagerReader({ endpoint, credentials: CREDENTIALS })(ARN)).rejects.toMatchObject({
      name: 'TargetCredentialsError',
      message: `cannot read secret ${ARN}: AccessDeniedException (HTTP 400)`,
    });
    reply = { status: 503, body: { __type: 'ServiceUnavailable' } };
    await expect(secretsManagerReader({ endpoint, credentials: CREDENTIALS })(ARN)).rejects.toMatchObject({
      name: 'StorageUnavailableError',
    });
  });

  it('a Secrets Manager that cannot be reached is retryable and names the secret, not its value', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    await expect(
      secretsManagerReader({ endpoint: `http://127.0.0.1:${port}`, credentials: CREDENTIALS })(ARN),
    ).rejects.toMatchObject({ name: 'StorageUnavailableError', message: expect.stringContaining(ARN) });
  });
});

describe('parseCredentials', () => {
  it('never puts the secret text into its errors', () => {
    const secret = '{"accessKeyId":"AKIAREALKEY","secretAccessKey":"';
    expect(() => parseCredentials(secret, ARN)).toThrow(/is not JSON/);
    try {
      parseCredentials(secret, ARN);
    } catch (error) {
      expect(String((error as Error).message)).not.toContain('AKIAREALKEY');
    }
  });
});

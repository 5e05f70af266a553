// The KMS automation identity: `pgkeep keygen --kms-key` (the built agent, its real KMS client)
// against a local KMS stand-in on 127.0.0.1 writes only the sealed identity; objects encrypted to the
// escrow and the automation recipients decrypt with the stock age CLI and either identity; unsealing
// needs the same key, the same encryption context and a principal allowed to decrypt.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { identityToRecipient } from 'age-encryption';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AutomationIdentityError, unsealIdentity } from '../../../agent/kms/automation-identity.ts';
import { awsKmsSealer } from '../../../agent/kms/aws-kms.ts';
import { decryptStream, encryptBuffer } from '../../../core/age-stream.ts';
import { referenceKeyPairs } from '../../support/age-keys.ts';
import { type LocalKms, localKms } from '../../support/local-kms.ts';
import { runPgkeep } from '../../support/pgkeep-cli.ts';

const KEY = 'arn:aws:kms:us-east-1:123456789012:key/0b1c2d3e-aaaa-bbbb-cccc-000000000001';
const OTHER_KEY = 'arn:aws:kms:us-east-1:123456789012:key/0b1c2d3e-aaaa-bbbb-cccc-000000000002';
const OPERATOR = 'AKIDOPERATOR';
const VERIFIER = 'AKIDVERIFIER';

let kms: LocalKms;
let server: { endpoint: string; stop(): Promise<void> };
let dir: string;
const awsEnv = (accessKeyId: string) => ({
  AWS_ENDPOINT_URL_KMS: server.endpoint,
  AWS_ACCESS_KEY_ID: accessKeyId,
  AWS_SECRET_ACCESS_KEY: 'local-secret',
  AWS_REGION: 'us-east-1',
  HOME: dir,
});

beforeAll(async () => {
  kms = localKms([KEY, OTHER_KEY]);
  server = await kms.serve({ decryptors: [VERIFIER] });
  dir = mkdtempSync(path.join(tmpdir(), 'pgkeep-kms-'));
});
afterAll(async () => {
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Unseals with the real SDK client against the local KMS, signing as `accessKeyId`. */
async function unsealAs(accessKeyId: string, sealed: string): Promise<string> {
  const saved = { ...process.env };
  Object.assign(process.env, awsEnv(accessKeyId));
  try {
    return await unsealIdentity(sealed, KEY, awsKmsSealer(KEY));
  } finally {
    process.env = saved;
  }
}

async function decryptWith(identity: string, ciphertext: Buffer): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(Readable.from([ciphertext]), decryptStream([identity]), async (source) => {
    for await (const chunk of source) out.push(chunk as Buffer);
  });
  return Buffer.concat(out);
}

describe('pgkeep keygen --kms-key', () => {
  it('writes only the sealed identity and prints its recipient; the stock age CLI decrypts with escrow or automation identity', async () => {
    const sealedFile = path.join(dir, 'automation.sealed');
    const run = await runPgkeep(
      ['keygen', '--kms-key', KEY, '--output', sealedFile, '--x25519'],
      awsEnv(OPERATOR),
    );
    expect(run.stderr).toContain(`sealed by ${KEY}`);
    expect(run.code).toBe(0);
    const recipient = run.stdout.trim();
    expect(recipient).toMatch(/^age1[0-9a-z]+$/);
    const sealed = readFileSync(sealedFile, 'utf8');
    expect(sealed).toMatch(/^[A-Za-z0-9+/]+={0,2}\n$/);
    expect(sealed).not.toContain('AGE-SECRET-KEY');

    // The operator may seal but not unseal; the verifier unseals, through the real SDK client.
    await expect(unsealAs(OPERATOR, sealed)).rejects.toThrow(
      /KMS refused to unseal the automation identity with arn:aws:kms:.*\(AccessDeniedException: AKIDOPERATOR is not authorized/,
    );
    const automation = await unsealAs(VERIFIER, sealed);
    expect(await identityToRecipient(automation)).toBe(recipient);

    // An object for two recipients: the operator's offline escrow one and the automation one.
    const { x25519: escrow } = await referenceKeyPairs();
    const plaintext = Buffer.from('a WAL segment, or a dump');
    const object = path.join(dir, 'object.age');
    writeFileSync(object, encryptBuffer([escrow.recipient, recipient], plaintext));
    for (const [name, identity] of [
      ['escrow', escrow.identity],
      ['automation', automation],
    ] as const) {
      const identityFile = path.join(dir, `${name}.txt`);
      writeFileSync(identityFile, `${identity}\n`, { mode: 0o600 });
      expect(execFileSync('age', ['-d', '-i', identityFile, object]).toString(), name).toBe(
        plaintext.toString(),
      );
    }
  });

  it('makes a post-quantum hybrid identity by default, which decrypts what the agent encrypts to it', async () => {
    const sealedFile = path.join(dir, 'hybrid.sealed');
    const run = await runPgkeep(['keygen', '--kms-key', KEY, '-o', sealedFile], awsEnv(OPERATOR));
    expect(run.code).toBe(0);
    const recipient = run.stdout.trim();
    expect(recipient).toMatch(/^age1pq1/);
    const identity = await unsealIdentity(readFileSync(sealedFile, 'utf8'), KEY, kms.sealer);
    const escrow = (await referenceKeyPairs()).hybrid;
    const object = encryptBuffer([escrow.recipient, recipient], Buffer.from('pq'));
    expect((await decryptWith(identity, object)).toString()).toBe('pq');
    expect((await decryptWith(escrow.identity, object)).toString()).toBe('pq');
  });

  it('refuses a value that is not a KMS key ARN, and leaves no file when KMS cannot be reached', async () => {
    const bad = await runPgkeep(
      ['keygen', '--kms-key', 'alias/pgkeep', '-o', path.join(dir, 'bad')],
      awsEnv(OPERATOR),
    );
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('"alias/pgkeep" is not a KMS key ARN');
    expect(existsSync(path.join(dir, 'bad'))).toBe(false);
    const down = await runPgkeep(['keygen', '--kms-key', KEY, '-o', path.join(dir, 'down')], {
      ...awsEnv(OPERATOR),
      AWS_ENDPOINT_URL_KMS: 'http://127.0.0.1:9',
      AWS_MAX_ATTEMPTS: '1',
    });
    expect(down.code).not.toBe(0);
    expect(down.stderr).toContain(`KMS refused to seal the automation identity with ${KEY}`);
    expect(down.stderr).not.toContain('local-secret');
    expect(existsSync(path.join(dir, 'down'))).toBe(false);
  });
});

describe('unsealing', () => {
  it('needs the key it was sealed with and the automation context, and names what is missing', async () => {
    const identity = (await referenceKeyPairs()).x25519.identity;
    const sealed = Buffer.from(
      await kms.sealer.encrypt(KEY, Buffer.from(identity), {
        application: 'pgkeep',
        purpose: 'something-else',
      }),
    ).toString('base64');
    await expect(unsealIdentity(sealed, KEY, kms.sealer)).rejects.toThrow(AutomationIdentityError);
    const { sealIdentity } = await import('../../../agent/kms/automation-identity.ts');
    const good = await sealIdentity(identity, KEY, kms.sealer);
    await expect(unsealIdentity(good, OTHER_KEY, kms.sealer)).rejects.toThrow(/InvalidCiphertextException/);
    expect(await unsealIdentity(good, KEY, kms.sealer)).toBe(identity);
    await expect(unsealIdentity('', KEY, kms.sealer)).rejects.toThrow(
      /no sealed automation identity: run pgkeep keygen --kms-key/,
    );
  });
});

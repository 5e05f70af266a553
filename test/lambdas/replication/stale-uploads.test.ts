// Orphaned multipart uploads (a provider killed mid-copy could not be told to abort) are aborted by
// a later run once older than the state machine's timeout, never while a run may still own them.
// s3rver does not list multipart uploads, so a small HTTP endpoint speaking that one S3 call stands
// in for a provider holding two uploads, and for one that does not implement the call.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Location } from '../../../lambdas/lib/locations.ts';
import { abortStaleUploads } from '../../../lambdas/replication/stale-uploads.ts';
import { createS3Client, S3Storage } from '../../../storage/s3-storage.ts';
import { S3RVER_CREDENTIALS } from '../../support/s3-server.ts';

const now = new Date('2026-11-22T04:00:00Z');
let server: Server;
let endpoint: string;
const aborted: string[] = [];

function locationAt(url: string, bucket: string): Location {
  const options = { bucket, prefix: 'copies/', endpoint: url, forcePathStyle: true, region: 'us-east-1' };
  const client = createS3Client(options);
  client.config.credentials = async () => S3RVER_CREDENTIALS;
  return { name: 'b2', storage: new S3Storage(options, client) };
}

beforeAll(async () => {
  server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname.startsWith('/nolist')) {
      res.writeHead(501, { 'content-type': 'application/xml' });
      res.end(
        '<?xml version="1.0" encoding="UTF-8"?><Error><Code>NotImplemented</Code><Message>no</Message></Error>',
      );
      return;
    }
    if (req.method === 'GET' && url.searchParams.has('uploads')) {
      expect(url.searchParams.get('prefix')).toBe('copies/v1/main/');
      res.writeHead(200, { 'content-type': 'application/xml' });
      res.end(`<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult><Bucket>offsite</Bucket><IsTruncated>false</IsTruncated>
<Upload><Key>copies/v1/main/base/old/base.tar.zst.age</Key><UploadId>orphan</UploadId><Initiated>2026-11-22T00:30:00.000Z</Initiated></Upload>
<Upload><Key>copies/v1/main/base/new/base.tar.zst.age</Key><UploadId>in-flight</UploadId><Initiated>2026-11-22T03:50:00.000Z</Initiated></Upload>
</ListMultipartUploadsResult>`);
      return;
    }
    if (req.method === 'DELETE' && url.searchParams.has('uploadId')) {
      aborted.push(`${url.pathname} ${url.searchParams.get('uploadId')}`);
      res.writeHead(204);
      res.end();
      return;
    }
    res.writeHead(400);
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

describe('abortStaleUploads', () => {
  it('aborts only uploads older than the replication timeout (3 h)', async () => {
    expect(await abortStaleUploads(locationAt(endpoint, 'offsite'), 'v1/main/', now)).toEqual({ aborted: 1 });
    expect(aborted).toEqual(['/offsite/copies/v1/main/base/old/base.tar.zst.age orphan']);
  });

  it('a provider without ListMultipartUploads is reported, not a failed run', async () => {
    expect(await abortStaleUploads(locationAt(endpoint, 'nolist'), 'v1/main/', now)).toEqual({
      aborted: 0,
      error: 'NotImplemented',
    });
  });
});

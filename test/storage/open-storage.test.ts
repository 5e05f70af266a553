import { describe, expect, it } from 'vitest';
import { FileStorage } from '../../storage/file-storage.ts';
import { InvalidStorageUrlError, openStorage, parseStorageUrl } from '../../storage/open-storage.ts';
import { S3Storage } from '../../storage/s3-storage.ts';

describe('parseStorageUrl', () => {
  it('parses file URLs to absolute directories', () => {
    expect(parseStorageUrl('file:///var/backups/pgkeep')).toEqual({
      scheme: 'file',
      path: '/var/backups/pgkeep',
    });
    expect(parseStorageUrl('file:///var/backups/pgkeep/')).toEqual({
      scheme: 'file',
      path: '/var/backups/pgkeep',
    });
    expect(parseStorageUrl('file://localhost/mnt/nas%20backups')).toEqual({
      scheme: 'file',
      path: '/mnt/nas backups',
    });
    expect(openStorage('file:///var/backups/pgkeep')).toBeInstanceOf(FileStorage);
  });

  it('parses s3 URLs with every option', () => {
    const url =
      's3://my-bucket/backups/prod/?endpoint=http://127.0.0.1:9000&path-style=true&region=us-east-1&checksum=when-supported&part-size-mib=64&queue-size=2&conditional-writes=false';
    expect(parseStorageUrl(url)).toEqual({
      scheme: 's3',
      bucket: 'my-bucket',
      prefix: 'backups/prod/',
      endpoint: 'http://127.0.0.1:9000',
      forcePathStyle: true,
      region: 'us-east-1',
      checksum: 'when-supported',
      partSizeMiB: 64,
      queueSize: 2,
      conditionalWrites: false,
    });
    const parsed = parseStorageUrl(url);
    if (parsed.scheme !== 's3') throw new Error('expected an s3 URL');
    const driver = new S3Storage(parsed);
    expect(driver.partSizeBytes).toBe(64 * 1024 * 1024);
    // openStorage defers loading the SDK, but reaches the same place.
    expect(openStorage(parsed).displayUrl).toBe(driver.displayUrl);
  });

  it('applies defaults to a bare s3 URL', () => {
    expect(parseStorageUrl('s3://my-bucket')).toEqual({
      scheme: 's3',
      bucket: 'my-bucket',
      prefix: '',
      forcePathStyle: false,
      checksum: 'when-required',
      partSizeMiB: 16,
      queueSize: 1,
      conditionalWrites: true,
    });
    expect(
      parseStorageUrl('s3://my-bucket/a%20b').scheme === 's3' && parseStorageUrl('s3://my-bucket/a%20b'),
    ).toMatchObject({
      prefix: 'a b/',
    });
  });

  const bad: Array<[string, string | RegExp]> = [
    ['/var/backups', 'is a path, not a URL: write file:///var/backups'],
    ['backups', 'repository "backups" is not supported'],
    ['gs://bucket/x', 'scheme "gs:" is not supported: use file:///absolute/path or s3://'],
    ['http://127.0.0.1:9000/bucket', 'scheme "http:" is not supported'],
    ['file:relative/path', 'needs "file://" and an absolute path'],
    ['file://relative/path', 'names host "relative": relative paths and remote hosts are not supported'],
    ['file:///var/backups?x=1', 'file:// takes none: remove them'],
    ['file:///', 'is the file system root'],
    ['s3:bucket/x', 'needs "s3://"'],
    ['s3:///prefix', 'has no bucket: write s3://<bucket>/<prefix>'],
    ['s3://b/x', 'bucket name "b" is not valid'],
    ['s3://Bad..bucket/x', 'bucket name "Bad..bucket" is not valid'],
    [
      's3://bucket:9000/x',
      'has a port after the bucket: the bucket goes after s3:// and the server in endpoint=',
    ],
    ['s3://bucket/a//b', 'has an empty, "." or ".." segment'],
    ['s3://bucket/a/../b', 'has an empty, "." or ".." segment'],
    [
      's3://bucket/x?endpoint=127.0.0.1:9000',
      'endpoint "127.0.0.1:9000" is not a URL: write endpoint=https://host',
    ],
    ['s3://bucket/x?endpoint=localhost:9000', 'uses localhost:: it must be http:// or https://'],
    ['s3://bucket/a/%2e%2e/b', 'has an empty, "." or ".." segment'],
    ['s3://bucket/x?endpoint=not a url', 'endpoint "not a url" is not a URL'],
    ['s3://bucket/x?endpoint=ftp://host', 'uses ftp:: it must be http:// or https://'],
    [
      's3://bucket/x?endpoint=http://host:9000/bucket',
      'has a path or query: give only scheme, host and port',
    ],
    [
      's3://bucket/x?endpont=http://host',
      'unknown option "endpont" in s3 repository URL: known options are endpoint,',
    ],
    ['s3://bucket/x?region=us-east-1&region=eu-west-1', 'option "region" appears twice'],
    ['s3://bucket/x?region=US%20East', 'region "US East" is not valid'],
    [
      's3://bucket/x?path-style=yes',
      'option path-style="yes" is not valid: use path-style=true or path-style=false',
    ],
    ['s3://bucket/x?checksum=always', 'checksum "always" is not valid: use checksum=when-required'],
    [
      's3://bucket/x?part-size-mib=4',
      'part-size-mib "4" is not valid: use a whole number of MiB from 5 to 5120',
    ],
    ['s3://bucket/x?part-size-mib=8.5', 'part-size-mib "8.5" is not valid'],
    ['s3://bucket/x?part-size-mib=6000', 'part-size-mib "6000" is not valid'],
    [
      's3://bucket/x?queue-size=0',
      'queue-size "0" is not valid: use a whole number of parts in flight from 1 to 16',
    ],
    ['s3://bucket/x?queue-size=17', 'queue-size "17" is not valid'],
    ['s3://bucket/x?conditional-writes=0', 'option conditional-writes="0" is not valid'],
  ];
  for (const [url, message] of bad) {
    it(`rejects ${url}`, () => {
      expect(() => parseStorageUrl(url)).toThrow(InvalidStorageUrlError);
      expect(() => parseStorageUrl(url)).toThrow(message);
    });
  }

  it('rejects credentials in the URL without repeating them', () => {
    for (const url of [
      's3://AKIAEXAMPLE:SeCrEt@bucket/x',
      's3://bucket/x?endpoint=http://AKIAEXAMPLE:SeCrEt@127.0.0.1:9000',
    ]) {
      let message = '';
      try {
        parseStorageUrl(url);
      } catch (error) {
        expect(error).toBeInstanceOf(InvalidStorageUrlError);
        message = (error as Error).message;
      }
      expect(message).toMatch(/contains credentials.*AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY/);
      expect(message).not.toContain('SeCrEt');
      expect(message).not.toContain('AKIAEXAMPLE');
    }
  });
});

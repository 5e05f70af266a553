import { describe, expect, it } from 'vitest';
import { MANIFEST_FORMAT, parseManifest } from '../../core/manifest.ts';

const object = {
  key: 'v1/main/stream/app.sql/20261122T021500Z-1a2b/stream.zst.age',
  role: 'stream',
  sizeBytes: 10,
  sha256: 'a'.repeat(64),
  plaintextSizeBytes: 5,
  plaintextSha256: 'b'.repeat(64),
  codec: 'zstd',
  encryption: 'age-v1',
};
const common = {
  format: MANIFEST_FORMAT,
  backupId: '20261122T021500Z-1a2b',
  cluster: 'main',
  startTime: '2026-11-22T02:15:00.000Z',
  stopTime: '2026-11-22T02:16:00.000Z',
  objects: [object],
  recipientFingerprints: ['abc'],
  agentVersion: '0.1.0',
};

describe('manifest kinds', () => {
  it('takes a stream backup without PostgreSQL facts, and requires its name', () => {
    expect(
      parseManifest(JSON.stringify({ ...common, kind: 'stream', streamName: 'app.sql' }), 'm').streamName,
    ).toBe('app.sql');
    expect(() => parseManifest(JSON.stringify({ ...common, kind: 'stream' }), 'm')).toThrow(
      'manifest m is invalid at streamName: required for a stream backup',
    );
    expect(() =>
      parseManifest(JSON.stringify({ ...common, kind: 'stream', streamName: '../x' }), 'm'),
    ).toThrow(/invalid at streamName: use 1-100 letters/);
  });

  it('requires the PostgreSQL version and system identifier of a logical or base backup', () => {
    expect(() => parseManifest(JSON.stringify({ ...common, kind: 'logical' }), 'm')).toThrow(
      'manifest m is invalid at pgVersionNum: required for a logical backup',
    );
    expect(() =>
      parseManifest(JSON.stringify({ ...common, kind: 'base', pgVersionNum: 150018, streamName: 'x' }), 'm'),
    ).toThrow('manifest m is invalid at systemIdentifier: required for a base backup');
  });
});

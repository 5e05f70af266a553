import { describe, expect, it } from 'vitest';
import {
  backupIdOfManifestKey,
  backupIdTime,
  clusterOfKey,
  decodeDatabaseName,
  encodeDatabaseName,
  globalsKey,
  logicalDumpKey,
  manifestKey,
  newBackupId,
  parseWalKey,
  walKey,
} from '../../core/keys.ts';

describe('key layout', () => {
  it('builds the documented shapes', () => {
    const id = newBackupId(new Date('2026-11-22T02:15:07.123Z'), () => 0.5);
    expect(id).toBe('20261122T021507Z-8000');
    expect(backupIdTime(id).toISOString()).toBe('2026-11-22T02:15:07.000Z');
    expect(logicalDumpKey('main', 'shop', id)).toBe(`v1/main/logical/shop/${id}/dump.zst.age`);
    expect(globalsKey('main', id)).toBe(`v1/main/logical/_globals/${id}/globals.sql.zst.age`);
    expect(manifestKey('main', id)).toBe(`v1/main/manifests/${id}.json`);
    expect(backupIdOfManifestKey(manifestKey('main', id))).toBe(id);
  });

  it('keeps any database name inside one key segment and away from _globals', () => {
    for (const name of ['_globals', 'a/b', '..', 'Kunden ü', 'x?y#z', '%41']) {
      const encoded = encodeDatabaseName(name);
      expect(encoded).not.toMatch(/[/?#]/);
      expect(encoded).not.toBe('_globals');
      expect(encoded).not.toBe('..');
      expect(decodeDatabaseName(encoded)).toBe(name);
    }
  });

  it('puts WAL under its hexadecimal timeline with the plaintext hash prefix', () => {
    const key = walKey('main', '0000000A000000000000002F', 'ab'.repeat(32));
    expect(key).toBe('v1/main/wal/0000000A/0000000A000000000000002F-abababababababab.zst.age');
    expect(parseWalKey(key)).toEqual({
      walFileName: '0000000A000000000000002F',
      hashPrefix: 'abababababababab',
    });
    expect(walKey('main', '0000000B.history', 'cd'.repeat(32))).toMatch(
      /^v1\/main\/wal\/0000000B\/0000000B\.history-/,
    );
  });

  it('rejects cluster names that would break the layout', () => {
    expect(() => manifestKey('Main', 'x')).toThrow(/invalid cluster name "Main"/);
    expect(() => manifestKey('a/b', 'x')).toThrow(/invalid cluster name/);
  });
});

describe('clusterOfKey', () => {
  it('names the cluster of a key under v1/<cluster>/ and nothing for any other key', () => {
    expect(clusterOfKey(manifestKey('main', '20251101T000000Z-0001'))).toBe('main');
    expect(clusterOfKey('v1/acme/wal/000000010000000000000001-ab.zst.age')).toBe('acme');
    expect(clusterOfKey('verify/main/report.json')).toBeUndefined();
    expect(clusterOfKey('v1/')).toBeUndefined();
  });
});

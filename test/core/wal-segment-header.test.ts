import { execFile } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import {
  InvalidWalSegmentError,
  parsePgControlSystemIdentifier,
  parseWalSegmentHeader,
} from '../../core/wal-segment-header.ts';
import { makeServerDir, PG_BIN } from '../support/pg-cluster.ts';

const execFileAsync = promisify(execFile);

function header(fields: {
  magic?: number;
  info?: number;
  tli?: number;
  sysid?: bigint;
  pageaddr?: bigint;
}): Buffer {
  const b = Buffer.alloc(8192);
  b.writeUInt16LE(fields.magic ?? 0xd110, 0);
  b.writeUInt16LE(fields.info ?? 0x0002, 2);
  b.writeUInt32LE(fields.tli ?? 1, 4);
  b.writeBigUInt64LE(fields.pageaddr ?? 0x5000000n, 8);
  b.writeBigUInt64LE(fields.sysid ?? 7300000000000000001n, 24);
  b.writeUInt32LE(16 * 1024 * 1024, 32);
  b.writeUInt32LE(8192, 36);
  return b;
}

describe('parseWalSegmentHeader', () => {
  it('reads the system identifier, timeline and position, with 64-bit identifiers exact', () => {
    const h = parseWalSegmentHeader(header({ tli: 0xa, sysid: 18446744073709551615n }), 'seg');
    expect(h).toMatchObject({
      pgMajorVersion: 15,
      timeline: 10,
      pageAddress: 0x5000000n,
      systemIdentifier: '18446744073709551615',
      segmentSizeBytes: 16 * 1024 * 1024,
      blockSizeBytes: 8192,
    });
  });

  it('refuses files that are not the start of a WAL segment, naming them', () => {
    expect(() => parseWalSegmentHeader(Buffer.from('00000002.history'), 'x')).toThrow(InvalidWalSegmentError);
    expect(() => parseWalSegmentHeader(header({ magic: 0x1234 }), 'pg_wal/X')).toThrow(/pg_wal\/X.*magic/);
    expect(() => parseWalSegmentHeader(header({ info: 0 }), 'y')).toThrow(/long page header/);
  });

  it("agrees with pg_controldata on a real cluster's first segment", async () => {
    const dir = await makeServerDir('pgkeep-hdr-');
    try {
      const data = join(dir, 'data');
      const asPostgres = process.getuid?.() === 0 ? ['-u', 'postgres'] : [];
      const cmd = asPostgres.length ? 'runuser' : join(PG_BIN, 'initdb');
      const args = asPostgres.length
        ? [...asPostgres, '--', join(PG_BIN, 'initdb'), '-D', data, '-N']
        : ['-D', data, '-N'];
      await execFileAsync(cmd, args, { cwd: '/tmp' });
      const { stdout } = await execFileAsync(join(PG_BIN, 'pg_controldata'), [data]);
      const sysid = /Database system identifier:\s+(\d+)/.exec(stdout)?.[1];
      const segment = await readFile(join(data, 'pg_wal', '000000010000000000000001'));
      const h = parseWalSegmentHeader(segment, 'first segment');
      expect(h.systemIdentifier).toBe(sysid);
      expect(h.timeline).toBe(1);
      expect(h.pageAddress).toBe(0x1000000n);
      expect(
        parsePgControlSystemIdentifier(await readFile(join(data, 'global', 'pg_control')), 'pg_control'),
      ).toBe(sysid);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

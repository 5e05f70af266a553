import { describe, expect, it } from 'vitest';
import {
  compareWalPositions,
  historyFileName,
  nextWalSegmentFileName,
  parseWalFileName,
  segmentNumber,
  segmentNumberOf,
  segmentsPerLogId,
  timelineHex,
  walFileNameForLsn,
  walSegmentFileName,
  walSegmentFileNameFromNumber,
} from '../../core/wal-names.ts';

describe('parseWalFileName', () => {
  it('splits a segment name into timeline, log id and segment id', () => {
    expect(parseWalFileName('000000010000000000000003')).toEqual({
      name: '000000010000000000000003',
      kind: 'segment',
      timeline: 1,
      timelineHex: '00000001',
      logId: 0,
      segmentId: 3,
      position: '0000000000000003',
    });
  });

  it('reads timelines as hexadecimal', () => {
    expect(parseWalFileName('0000000A00000002000000FF')).toMatchObject({
      timeline: 10,
      logId: 2,
      segmentId: 255,
    });
    expect(parseWalFileName('0000001A.history')).toEqual({
      name: '0000001A.history',
      kind: 'history',
      timeline: 26,
      timelineHex: '0000001A',
    });
  });

  it('recognises .partial segments and backup history files', () => {
    expect(parseWalFileName('000000010000000000000003.partial')).toMatchObject({
      kind: 'partial',
      segmentId: 3,
    });
    expect(parseWalFileName('000000010000000000000002.00000028.backup')).toMatchObject({
      kind: 'backup-history',
      timeline: 1,
      segmentId: 2,
    });
  });

  it('rejects anything PostgreSQL would not archive', () => {
    for (const name of [
      '',
      '00000001000000000000003',
      '0000000100000000000000030',
      '00000001000000000000000a',
      '000000000000000000000003',
      '00000000.history',
      '00000001.History',
      '000000010000000000000003.tmp',
      'x00000001.history',
    ]) {
      expect(parseWalFileName(name), name).toBeUndefined();
    }
  });
});

describe('segment arithmetic', () => {
  it('has 256 segments per log id with 16 MiB segments, more with smaller ones', () => {
    expect(segmentsPerLogId()).toBe(256);
    expect(segmentsPerLogId(1024 * 1024)).toBe(4096);
    expect(segmentsPerLogId(1024 * 1024 * 1024)).toBe(4);
    expect(() => segmentsPerLogId(3 * 1024 * 1024)).toThrow(/power of two/);
  });

  it('rolls over from segment FF to the next log id', () => {
    expect(nextWalSegmentFileName('0000000100000000000000FE')).toBe('0000000100000000000000FF');
    expect(nextWalSegmentFileName('0000000100000000000000FF')).toBe('000000010000000100000000');
    expect(nextWalSegmentFileName('000000020000000100000000.partial')).toBe('000000020000000100000001');
    expect(nextWalSegmentFileName('000000010000000000000FFF', 1024 * 1024)).toBe('000000010000000100000000');
    expect(() => nextWalSegmentFileName('00000002.history')).toThrow(/not a segment/);
  });

  it('converts between names and absolute segment numbers', () => {
    expect(segmentNumber(1, 0)).toBe(256);
    expect(segmentNumberOf('0000000100000002000000FF')).toBe(2 * 256 + 255);
    expect(walSegmentFileNameFromNumber(3, 2 * 256 + 255)).toBe('0000000300000002000000FF');
    expect(() => segmentNumber(0, 256)).toThrow(/invalid segment id 256/);
  });

  it('names the segment holding an LSN', () => {
    expect(walFileNameForLsn(1, '0/3000028')).toBe('000000010000000000000003');
    expect(walFileNameForLsn(1, '16/B374D848')).toBe('0000000100000016000000B3');
    expect(walFileNameForLsn(2, '0/1000000')).toBe('000000020000000000000001');
  });

  it('orders files by stream position regardless of timeline', () => {
    expect(compareWalPositions('000000020000000000000003', '000000010000000000000004')).toBe(-1);
    expect(compareWalPositions('000000010000000100000000', '0000000100000000000000FF')).toBe(1);
    expect(compareWalPositions('000000010000000000000003.partial', '000000020000000000000003')).toBe(0);
  });

  it('formats timelines and history names in upper-case hex', () => {
    expect(timelineHex(10)).toBe('0000000A');
    expect(historyFileName(255)).toBe('000000FF.history');
    expect(walSegmentFileName(1, 0, 3)).toBe('000000010000000000000003');
    expect(() => timelineHex(0)).toThrow(/invalid timeline 0/);
  });
});

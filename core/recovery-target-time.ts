/**
 * Strict parsing of a point-in-time recovery target. PostgreSQL's own parser accepts almost
 * anything (`yesterday 3pm`, a time without a zone read in the server's TimeZone), and a target it
 * misreads restores the wrong data without a word. Only two forms are accepted, both with an
 * explicit zone, and the value handed to PostgreSQL is one normalized ISO 8601 string that it and
 * this program read the same way.
 */

export const ACCEPTED_TARGET_TIME_FORMS =
  'ISO 8601 with a zone (2026-11-29T14:30:00Z, 2026-11-29T15:30:00.250+01:00) or PostgreSQL ' +
  'timestamptz output with a zone (2026-11-29 14:30:00.123456+00, 2026-11-29 14:30:00 UTC)';

const FORM =
  /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?\s*(Z|UTC|[+-]\d{2}(?::?\d{2})?)$/i;

export interface TargetTime {
  /** The normalized value for recovery_target_time: `YYYY-MM-DDTHH:MM:SS[.ffffff]±HH:MM`. */
  readonly value: string;
  /** The instant, to the millisecond (PostgreSQL compares to the microsecond). */
  readonly epochMs: number;
}

/** Parses `text`, or throws an error that names the value and the accepted forms. */
export function parseTargetTime(text: string): TargetTime {
  const m = FORM.exec(text.trim());
  const refuse = (why: string) =>
    new Error(`--target-time "${text}" ${why}: use ${ACCEPTED_TARGET_TIME_FORMS}`);
  if (!m) {
    throw refuse(
      /\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/.test(text.trim()) ? 'has no time zone' : 'is not a time with a zone',
    );
  }
  const [, y, mo, d, h, mi, s = '00', frac = '', zone = ''] = m;
  const offset = /^(Z|UTC)$/i.test(zone) ? '+00:00' : normalizeOffset(zone);
  const fraction = frac ? `.${frac}` : '';
  const value = `${y}-${mo}-${d}T${h}:${mi}:${s}${fraction}${offset}`;
  const epochMs = Date.parse(value);
  const fields = [Number(mo), Number(d), Number(h), Number(mi), Number(s)];
  const local = new Date(
    Date.UTC(Number(y), (fields[0] ?? 1) - 1, fields[1], fields[2], fields[3], fields[4]),
  );
  // Date.UTC rolls 2026-02-30 over to March: a date that does not exist changes on the way back.
  if (
    Number.isNaN(epochMs) ||
    local.getUTCMonth() + 1 !== fields[0] ||
    local.getUTCDate() !== fields[1] ||
    (fields[2] ?? 0) > 23 ||
    (fields[3] ?? 0) > 59 ||
    (fields[4] ?? 0) > 59
  ) {
    throw refuse('is not a valid date and time');
  }
  return { value, epochMs };
}

function normalizeOffset(zone: string): string {
  const digits = zone.slice(1).replace(':', '');
  const hh = digits.slice(0, 2);
  const mm = digits.slice(2, 4) || '00';
  return `${zone[0]}${hh}:${mm}`;
}

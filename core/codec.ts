/**
 * The compression codec of every object: zstd (named in the key suffix `.zst.age` and in manifests).
 *
 * Level 1 by default. Measured on a 157 MB `pg_dump -Fc -Z0` of varied rows (`zstd -b1e4`):
 * level 1 compresses 2.35x at 248 MB/s, level 2 2.40x at 161 MB/s, level 3 2.34x at 96 MB/s. Dump
 * and WAL data gain nothing from higher levels while the host's CPU is shared with PostgreSQL, so
 * the fastest level keeps a backup close to pg_dump's own speed. `zstdLevel` raises it.
 */
export const DEFAULT_ZSTD_LEVEL = 1;
export const MAX_ZSTD_LEVEL = 19;

/**
 * PAX extended header records ("LEN KEY=VALUE\n", LEN counting the whole record). Values are
 * bytes: paths need not be UTF-8 and SCHILY.xattr values are binary. Later records win, except
 * GNU sparse 0.0's GNU.sparse.offset / GNU.sparse.numbytes, which repeat and are kept in order.
 */
import { TarFormatError } from './errors.ts';
import type { TarTime } from './types.ts';

export interface PaxRecords {
  map: Map<string, Uint8Array>;
  /** GNU.sparse.offset and GNU.sparse.numbytes values in archive order (sparse 0.0). */
  sparse00: { key: 'offset' | 'numbytes'; value: Uint8Array }[];
}

const utf8 = new TextDecoder('utf-8');
const latin1 = new TextDecoder('latin1');

export function emptyRecords(): PaxRecords {
  return { map: new Map(), sparse00: [] };
}

/** Parses `data` (the extended header's content) into `into`. */
export function parsePax(data: Uint8Array, into: PaxRecords, archive: string, offset: number): void {
  let p = 0;
  while (p < data.length) {
    // Some writers pad the data with NULs after the last record.
    if (data[p] === 0) break;
    let q = p;
    let len = 0;
    while (q < data.length && data[q]! >= 0x30 && data[q]! <= 0x39 && q - p < 12) len = len * 10 + (data[q++]! - 0x30);
    if (q === p || data[q] !== 0x20 || len <= q - p + 1 || p + len > data.length || data[p + len - 1] !== 0x0a) {
      throw new TarFormatError(archive, offset, `malformed PAX record at byte ${p} of the extended header`);
    }
    const rec = data.subarray(q + 1, p + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq <= 0) throw new TarFormatError(archive, offset, `PAX record at byte ${p} has no "key="`);
    const key = utf8.decode(rec.subarray(0, eq));
    const value = rec.slice(eq + 1);
    if (key === 'GNU.sparse.offset') into.sparse00.push({ key: 'offset', value });
    else if (key === 'GNU.sparse.numbytes') into.sparse00.push({ key: 'numbytes', value });
    else into.map.set(key, value);
    p += len;
  }
}

/**
 * Merges a global header's records into the running globals; an empty value removes the key,
 * except for an xattr, whose value may be empty.
 */
export function mergeGlobal(global: Map<string, Uint8Array>, recs: PaxRecords): void {
  for (const [k, v] of recs.map) {
    if (v.length === 0 && !k.includes('.xattr.')) global.delete(k);
    else global.set(k, v);
  }
}

export function ascii(v: Uint8Array): string {
  return latin1.decode(v);
}

/** A non-negative decimal integer, or undefined. */
export function decimal(v: Uint8Array): number | undefined {
  if (v.length === 0 || v.length > 16) return undefined;
  let n = 0;
  for (const c of v) {
    if (c < 0x30 || c > 0x39) return undefined;
    n = n * 10 + (c - 0x30);
  }
  return Number.isSafeInteger(n) ? n : undefined;
}

/** A PAX time: decimal seconds, optionally negative, with an optional fraction (to 1 ns). */
export function paxTime(v: Uint8Array): TarTime | undefined {
  const m = /^(-?)(\d{1,16})(?:\.(\d*))?$/.exec(latin1.decode(v));
  if (!m) return undefined;
  let sec = Number(m[2]);
  let nsec = m[3] ? Number((m[3] + '00000000').slice(0, 9)) : 0;
  if (!Number.isSafeInteger(sec)) return undefined;
  if (m[1]) {
    sec = 0 - sec; // not -sec: "-0" is +0
    if (nsec > 0) {
      sec -= 1;
      nsec = 1e9 - nsec;
    }
  }
  return { sec, nsec };
}

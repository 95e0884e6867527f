/**
 * GNU sparse files: the maps of old GNU headers (type 'S': 4 entries in the header, 21 per
 * extension block) and of PAX formats 0.0 (repeated GNU.sparse.offset/numbytes), 0.1
 * (GNU.sparse.map "off,len,...") and 1.0 (the map as decimal lines at the start of the data,
 * padded to a block). The archive stores the segments' data back to back.
 */
import { TarFormatError } from './errors.ts';
import { number } from './header.ts';
import { ascii, decimal, type PaxRecords } from './pax.ts';

export interface Segment { offset: number; length: number }

/** Reads `count` (offset, numbytes) pairs of 12-byte numbers from `b` at `off`; stops at an empty one. */
export function gnuSparseEntries(b: Uint8Array, off: number, count: number, out: Segment[], archive: string, at: number): void {
  for (let i = 0; i < count; i++) {
    const p = off + i * 24;
    if (b[p] === 0) return;
    const offset = number(b, p, 12);
    const length = number(b, p + 12, 12);
    if (offset === undefined || length === undefined) {
      throw new TarFormatError(archive, at, `bad old GNU sparse entry ${i}`);
    }
    out.push({ offset, length });
  }
}

/** The map of PAX sparse 0.0 or 0.1, or undefined when the records describe no sparse file. */
export function paxSparseMap(recs: PaxRecords, archive: string, at: number): Segment[] | undefined {
  const map = recs.map.get('GNU.sparse.map');
  if (map !== undefined) {
    const parts = map.length === 0 ? [] : ascii(map).split(',');
    if (parts.length % 2 !== 0) throw new TarFormatError(archive, at, 'GNU.sparse.map has an odd number of values');
    const out: Segment[] = [];
    for (let i = 0; i < parts.length; i += 2) out.push(pair(parts[i]!, parts[i + 1]!, archive, at));
    return out;
  }
  if (recs.sparse00.length === 0 && !recs.map.has('GNU.sparse.numblocks')) return undefined;
  const out: Segment[] = [];
  const s = recs.sparse00;
  if (s.length % 2 !== 0) throw new TarFormatError(archive, at, 'GNU.sparse.offset without GNU.sparse.numbytes');
  for (let i = 0; i < s.length; i += 2) {
    if (s[i]!.key !== 'offset' || s[i + 1]!.key !== 'numbytes') {
      throw new TarFormatError(archive, at, 'GNU.sparse.offset and GNU.sparse.numbytes out of order');
    }
    out.push(pair(ascii(s[i]!.value), ascii(s[i + 1]!.value), archive, at));
  }
  return out;
}

function pair(o: string, n: string, archive: string, at: number): Segment {
  const offset = /^\d+$/.test(o) ? Number(o) : NaN;
  const length = /^\d+$/.test(n) ? Number(n) : NaN;
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length)) {
    throw new TarFormatError(archive, at, `bad sparse map entry "${o},${n}"`);
  }
  return { offset, length };
}

/**
 * Parses a sparse 1.0 map from the start of the data (`text`, whole blocks read so far).
 * Returns the map and how many bytes of `text` it used, or undefined if `text` ends inside it.
 */
export function sparse10Map(text: Uint8Array, archive: string, at: number): { map: Segment[]; used: number } | undefined {
  let p = 0;
  const line = (): number | undefined | null => {
    const nl = text.indexOf(0x0a, p);
    if (nl < 0) return null;
    const v = decimal(text.subarray(p, nl));
    p = nl + 1;
    return v;
  };
  const count = line();
  if (count === null) return undefined;
  if (count === undefined) throw new TarFormatError(archive, at, 'bad sparse 1.0 map: block count');
  const map: Segment[] = [];
  for (let i = 0; i < count; i++) {
    const offset = line();
    if (offset === null) return undefined;
    const length = line();
    if (length === null) return undefined;
    if (offset === undefined || length === undefined) {
      throw new TarFormatError(archive, at, `bad sparse 1.0 map: entry ${i}`);
    }
    map.push({ offset, length });
  }
  return { map, used: p };
}

/**
 * Checks a map against the file's real size and the stored data (segments in order, inside the
 * file, their lengths adding up to what is stored) and drops empty segments (GNU tar ends a map
 * with (size, 0) when the file ends in a hole).
 */
export function checkedMap(map: Segment[], realSize: number, stored: number, archive: string, at: number): Segment[] {
  let end = 0;
  let total = 0;
  const out: Segment[] = [];
  for (const s of map) {
    if (s.offset < end || s.offset + s.length > realSize) {
      throw new TarFormatError(archive, at, `sparse segment [${s.offset}, +${s.length}) overlaps the previous one or ends past the size ${realSize}`);
    }
    end = s.offset + s.length;
    total += s.length;
    if (s.length > 0) out.push(s);
  }
  if (total !== stored) {
    throw new TarFormatError(archive, at, `sparse map holds ${total} bytes of data but the member stores ${stored}`);
  }
  return out;
}

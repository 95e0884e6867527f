/**
 * The 512-byte tar header: field offsets (ustar, with GNU's use of the prefix area), numbers
 * (octal text or GNU base-256, negative included) and the checksum (unsigned, or signed as
 * some old tars computed it). Pure functions over one block.
 */
export const BLOCK = 512;

export const F = {
  name: 0, mode: 100, uid: 108, gid: 116, size: 124, mtime: 136, chksum: 148, typeflag: 156,
  linkname: 157, magic: 257, version: 263, uname: 265, gname: 297, devmajor: 329, devminor: 337,
  prefix: 345,
  // GNU format: the prefix area holds these instead.
  gnuAtime: 345, gnuCtime: 357, gnuSparse: 386, gnuIsExtended: 482, gnuRealSize: 483,
} as const;

export type HeaderFormat = 'ustar' | 'gnu' | 'v7';

/** Unsigned sum of the block's bytes; 0 exactly when the block is all zeros (an end marker). */
export function blockSum(h: Uint8Array): number {
  let s = 0;
  for (let i = 0; i < BLOCK; i++) s += h[i]!;
  return s;
}

/** True when the stored checksum matches the block's sum (unsigned or signed), given `sum`. */
export function checksumOk(h: Uint8Array, sum: number): boolean {
  const stored = number(h, F.chksum, 8);
  if (stored === undefined) return false;
  let field = 0;
  for (let i = F.chksum; i < F.chksum + 8; i++) field += h[i]!;
  const unsigned = sum - field + 8 * 0x20;
  if (stored === unsigned) return true;
  let signed = unsigned;
  for (let i = 0; i < BLOCK; i++) if (h[i]! > 127 && (i < F.chksum || i >= F.chksum + 8)) signed -= 256;
  return stored === signed;
}

export function headerFormat(h: Uint8Array): HeaderFormat {
  // "ustar\0" "00" (POSIX) or "ustar " " \0" (GNU); anything else is a v7 header.
  if (h[257] !== 0x75 || h[258] !== 0x73 || h[259] !== 0x74 || h[260] !== 0x61 || h[261] !== 0x72) return 'v7';
  if (h[262] === 0 && h[263] === 0x30 && h[264] === 0x30) return 'ustar';
  if (h[262] === 0x20 && h[263] === 0x20 && (h[264] === 0 || h[264] === 0x20)) return 'gnu';
  return h[262] === 0 ? 'ustar' : 'v7';
}

/**
 * A numeric field: octal digits (leading spaces, ending at a space or NUL as GNU tar reads them;
 * empty = 0), or GNU base-256 (first byte 0x80 positive, 0xff negative). undefined when
 * malformed or unsafe.
 */
export function number(h: Uint8Array, off: number, len: number): number | undefined {
  const first = h[off]!;
  if (first & 0x80) {
    const negative = first === 0xff;
    if (!negative && first !== 0x80) return undefined;
    let v = 0;
    for (let i = off + 1; i < off + len; i++) v = v * 256 + (negative ? 255 - h[i]! : h[i]!);
    if (!Number.isSafeInteger(v)) return undefined;
    return negative ? -v - 1 : v;
  }
  let i = off;
  const end = off + len;
  while (i < end && h[i] === 0x20) i++;
  let v = 0;
  for (; i < end; i++) {
    const c = h[i]!;
    if (c === 0 || c === 0x20) break;
    if (c < 0x30 || c > 0x37) return undefined;
    v = v * 8 + (c - 0x30);
  }
  return Number.isSafeInteger(v) ? v : undefined;
}

/** The bytes of a NUL-terminated (or full) text field, as a view into the block. */
export function text(h: Uint8Array, off: number, len: number): Uint8Array {
  let end = off;
  while (end < off + len && h[end] !== 0) end++;
  return h.subarray(off, end);
}

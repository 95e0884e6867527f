/**
 * The tar wrapper layer blobs are shipped in: one member whose payload is the zfile (or LSMT)
 * blob. The reader finds the member in place; the writer produces the reference's exact bytes
 * (docs/format.md §3.8): a PAX header carrying the real size, a ustar header with size 0, the
 * payload at 1536, zero padding to 512 and two zero blocks.
 */
import type { ByteSource } from '../io/types.ts';
import { readExact, SliceSource } from '../io/util.ts';
import { ZFileFormatError } from './errors.ts';

export const TAR_BLOCK = 512;
/** Where the reference writer puts the payload (PAX header + PAX record + ustar header). */
export const TAR_PAYLOAD_OFFSET = 3 * TAR_BLOCK;
export const TAR_MEMBER_NAME = 'overlaybd.commit';
/** Extended headers larger than this are refused rather than read into memory. */
const MAX_PAX_SIZE = 1 << 20;

const latin1 = new TextDecoder('latin1');

export function field(b: Uint8Array, off: number, len: number): string {
  let end = off;
  while (end < off + len && b[end] !== 0) end++;
  return latin1.decode(b.subarray(off, end));
}

/** Sum of the header bytes with the checksum field counted as spaces, unsigned and signed. */
function checksums(h: Uint8Array): [number, number] {
  let u = 0;
  let s = 0;
  for (let i = 0; i < TAR_BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 0x20 : h[i]!;
    u += c;
    s += c > 127 ? c - 256 : c;
  }
  return [u, s];
}

/** Parses a numeric field: octal text (space/NUL padded) or GNU base-256 (high bit set). */
export function numeric(h: Uint8Array, off: number, len: number): number | undefined {
  if (h[off]! & 0x80) {
    let v = h[off]! & 0x3f;
    for (let i = 1; i < len; i++) v = v * 256 + h[off + i]!;
    return Number.isSafeInteger(v) ? v : undefined;
  }
  const text = field(h, off, len).trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) return undefined;
  const v = parseInt(text, 8);
  return Number.isSafeInteger(v) ? v : undefined;
}

/** True when `h` is a ustar (POSIX or GNU) header block with a valid checksum. */
export function isTarHeader(h: Uint8Array): boolean {
  const magic = field(h, 257, 6);
  const version = latin1.decode(h.subarray(263, 265));
  const posix = magic === 'ustar' && version === '00';
  const gnu = magic === 'ustar ' && (version === ' \0' || version === '  ');
  if (!posix && !gnu) return false;
  const stored = numeric(h, 148, 8);
  if (stored === undefined) return false;
  const [u, s] = checksums(h);
  return stored === u || stored === s;
}

/** The records of a PAX extended header (`path`, `size`, …). */
export function paxRecords(records: Uint8Array, file: string, at: number): Map<string, string> {
  const out = new Map<string, string>();
  let pos = 0;
  while (pos < records.length && records[pos] !== 0) {
    const sp = records.indexOf(0x20, pos);
    const len = sp < 0 ? NaN : Number(latin1.decode(records.subarray(pos, sp)));
    if (!Number.isSafeInteger(len) || len <= sp - pos + 1 || pos + len > records.length || records[pos + len - 1] !== 0x0a) {
      throw new ZFileFormatError(file, 'tar-pax', 'malformed PAX record', at + pos);
    }
    const kv = new TextDecoder().decode(records.subarray(sp + 1, pos + len - 1));
    const eq = kv.indexOf('=');
    if (eq > 0) out.set(kv.slice(0, eq), kv.slice(eq + 1));
    pos += len;
  }
  const size = out.get('size');
  if (size !== undefined && (!/^\d+$/.test(size) || !Number.isSafeInteger(Number(size)))) throw new ZFileFormatError(file, 'tar-pax', `bad PAX size "${size}"`, at);
  return out;
}

/**
 * When `src` is a tar archive, returns a source over its first regular member's payload, read
 * in place; resolves null when `src` is not a tar. A tar whose member runs past the end of
 * `src`, or whose extended headers are malformed, is an error rather than "not a tar".
 */
export async function openTarEntry(src: ByteSource): Promise<SliceSource | null> {
  if (src.size < TAR_BLOCK) return null;
  const h = new Uint8Array(TAR_BLOCK);
  await readExact(src, h, 0);
  if (!isTarHeader(h)) return null;
  let at = 0;
  let size: number | undefined;
  for (;;) {
    const type = String.fromCharCode(h[156]!);
    const hsize = numeric(h, 124, 12);
    if (hsize === undefined) throw new ZFileFormatError(src.name, 'tar-header', 'bad size field', at + 124);
    const dataAt = at + TAR_BLOCK;
    if (type === 'x' || type === 'g' || type === 'L' || type === 'K') {
      // PAX headers (x: next entry, g: global) and GNU long names precede the member.
      if (hsize > MAX_PAX_SIZE || dataAt + hsize > src.size) throw new ZFileFormatError(src.name, 'tar-pax', `extended header of ${hsize} bytes does not fit`, at + 124);
      if (type === 'x') {
        const records = new Uint8Array(hsize);
        await readExact(src, records, dataAt);
        const v = paxRecords(records, src.name, dataAt).get('size');
        if (v !== undefined) size = Number(v);
      }
      at = dataAt + Math.ceil(hsize / TAR_BLOCK) * TAR_BLOCK;
    } else if (type === '0' || type === '\0' || type === '7') {
      const payloadSize = size !== undefined && size > 0 ? size : hsize;
      if (dataAt + payloadSize > src.size) {
        throw new ZFileFormatError(src.name, 'tar-size', `member of ${payloadSize} bytes at ${dataAt} runs past the end (${src.size})`, at + 124);
      }
      const name = field(h, 0, 100) || TAR_MEMBER_NAME;
      return new SliceSource(src, dataAt, payloadSize, `${src.name}:${name}`);
    } else {
      throw new ZFileFormatError(src.name, 'tar-type', `unsupported tar entry type "${type}" before the payload`, at + 156);
    }
    if (at + TAR_BLOCK > src.size) throw new ZFileFormatError(src.name, 'tar-header', 'archive ends inside its headers', at);
    await readExact(src, h, at);
    if (!isTarHeader(h)) throw new ZFileFormatError(src.name, 'tar-header', 'expected a ustar header after the extended header', at);
  }
}

export function putString(b: Uint8Array, off: number, text: string): void {
  for (let i = 0; i < text.length; i++) b[off + i] = text.charCodeAt(i);
}

/** Right-aligned octal in `width` characters, space padded (the reference's style). */
export function octal(v: number, width: number): string {
  return v.toString(8).padStart(width, ' ');
}

export function putChecksum(h: Uint8Array): void {
  const [u] = checksums(h);
  putString(h, 148, octal(u, 6) + ' \0');
}

export interface TarWrapOptions {
  /** Mode of the member (default 0o100644, what the reference records for its output file). */
  mode?: number;
  /** Owner names recorded in the ustar header (default "root", the reference's uid/gid 0). */
  uname?: string;
  gname?: string;
}

/** The 1536 bytes placed before a payload of `payloadSize` bytes. */
export function tarHeaderBlocks(payloadSize: number, opts: TarWrapOptions = {}): Uint8Array {
  const out = new Uint8Array(TAR_PAYLOAD_OFFSET);
  const body = ` size=${payloadSize}\n`;
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  const record = `${len}${body}`;

  const pax = out.subarray(0, TAR_BLOCK);
  putString(pax, 0, 'overlaybd.pax');
  putString(pax, 124, octal(record.length, 11) + ' ');
  pax[156] = 0x78; // 'x'
  putString(pax, 257, 'ustar\0');
  putString(pax, 263, '00');
  putChecksum(pax);

  putString(out, TAR_BLOCK, record);

  const ustar = out.subarray(2 * TAR_BLOCK, 3 * TAR_BLOCK);
  putString(ustar, 0, TAR_MEMBER_NAME);
  putString(ustar, 100, octal(opts.mode ?? 0o100644, 6) + ' \0');
  putString(ustar, 108, octal(0, 6) + ' \0');
  putString(ustar, 116, octal(0, 6) + ' \0');
  putString(ustar, 124, octal(0, 11) + ' ');
  putString(ustar, 136, octal(0, 11) + ' ');
  ustar[156] = 0x30; // '0'
  putString(ustar, 257, 'ustar\0');
  putString(ustar, 263, '00');
  putString(ustar, 265, (opts.uname ?? 'root').slice(0, 31));
  putString(ustar, 297, (opts.gname ?? 'root').slice(0, 31));
  putChecksum(ustar);
  return out;
}

/** Bytes after the payload: zero padding to a 512 multiple, then two zero blocks. */
export function tarTrailerSize(payloadSize: number): number {
  return (TAR_BLOCK - (payloadSize % TAR_BLOCK)) % TAR_BLOCK + 2 * TAR_BLOCK;
}

/**
 * A deterministic tar writer for tests and the benchmark's images: every member type, PAX
 * records where ustar fields cannot hold a value (long paths and links, big numbers, fractional
 * or negative times, xattrs, non-UTF-8 names with hdrcharset=BINARY), GNU long names and
 * base-256 numbers in GNU format, PAX 1.0 sparse files. Output depends only on the entries:
 * no clock, no host, records in a fixed order and xattrs sorted by name.
 */
import { InvalidArgumentError } from '../io/errors.ts';
import { BLOCK, F } from './header.ts';
import type { TarTime, TarType } from './types.ts';

export interface WriteEntry {
  /** Written as given (a directory's trailing "/" is the caller's choice). */
  path: string | Uint8Array;
  type: TarType;
  mode?: number;
  uid?: number; gid?: number;
  uname?: string; gname?: string;
  mtime?: number | TarTime;
  atime?: TarTime; ctime?: TarTime;
  linkname?: string | Uint8Array;
  devmajor?: number; devminor?: number;
  xattrs?: ReadonlyMap<string, Uint8Array | string> | Readonly<Record<string, Uint8Array | string>>;
  /** A dense file's content. */
  data?: Uint8Array;
  /** A sparse file (PAX format only): its size and its data segments, in order. */
  sparse?: { size: number; segments: readonly { offset: number; bytes: Uint8Array }[] };
}

export interface TarWriterOptions {
  /** 'pax' (default): ustar headers plus PAX records as needed; 'gnu': GNU headers, long names
   *  and base-256 numbers (no xattrs, sparse or fractional times); 'ustar': fails on what ustar
   *  cannot hold. */
  format?: 'pax' | 'gnu' | 'ustar';
  /** Pad the archive to a multiple of this (GNU tar and Python use 10240); default 1024-byte end only. */
  recordSize?: number;
}

const enc = new TextEncoder();
const bytesOf = (s: string | Uint8Array): Uint8Array => (typeof s === 'string' ? enc.encode(s) : s);
const TYPEFLAG: Readonly<Record<TarType, number>> = {
  file: 0x30, hardlink: 0x31, symlink: 0x32, chr: 0x33, blk: 0x34, dir: 0x35, fifo: 0x36,
};

function isUtf8(b: Uint8Array): boolean {
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(b);
    return true;
  } catch {
    return false;
  }
}

/** One PAX record "LEN key=value\n" (LEN counts itself). */
function record(key: string, value: Uint8Array): Uint8Array {
  const k = enc.encode(key);
  const base = k.length + value.length + 3;
  let len = base + String(base).length;
  if (String(len).length !== String(base).length) len = base + String(len).length;
  const out = new Uint8Array(len);
  const head = enc.encode(`${len} ${key}=`);
  out.set(head);
  out.set(value, head.length);
  out[len - 1] = 0x0a;
  return out;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

const pad = (n: number): Uint8Array => new Uint8Array((BLOCK - (n % BLOCK)) % BLOCK);
const timeText = (t: TarTime): string => {
  if (t.nsec === 0) return String(t.sec);
  // Negative times with a fraction: -1.25 is sec -2, nsec 750000000.
  const neg = t.sec < 0;
  const whole = neg ? -(t.sec + 1) : t.sec;
  const frac = String(neg ? 1e9 - t.nsec : t.nsec).padStart(9, '0').replace(/0+$/, '');
  return `${neg ? '-' : ''}${whole}.${frac}`;
};

export class TarWriter {
  readonly #format: 'pax' | 'gnu' | 'ustar';
  readonly #recordSize: number;
  #written = 0;

  constructor(opts: TarWriterOptions = {}) {
    this.#format = opts.format ?? 'pax';
    this.#recordSize = opts.recordSize ?? BLOCK;
  }

  /** The bytes of one member (its extended headers, header, data and padding). */
  entry(e: WriteEntry): Uint8Array {
    const out = this.#entry(e);
    this.#written += out.length;
    return out;
  }

  /** The end of the archive: two zero blocks, then padding to the record size. */
  end(): Uint8Array {
    const n = this.#written + 2 * BLOCK;
    const total = Math.ceil(n / this.#recordSize) * this.#recordSize;
    return new Uint8Array(total - this.#written);
  }

  #entry(e: WriteEntry): Uint8Array {
    const fmt = this.#format;
    const pax: Uint8Array[] = [];
    const parts: Uint8Array[] = [];
    const refuse = (what: string): never => {
      throw new InvalidArgumentError(`tar writer (${fmt}): ${String(e.path)}: ${what}`);
    };
    const h = new Uint8Array(BLOCK);
    let path = bytesOf(e.path);
    const linkname = bytesOf(e.linkname ?? '');
    let body: Uint8Array[] = [];
    let size = e.type === 'file' ? (e.data?.length ?? 0) : 0;

    if (e.sparse) {
      if (fmt !== 'pax' || e.type !== 'file') refuse('sparse files need the pax format and type file');
      const segs = e.sparse!.segments;
      const map = enc.encode(`${segs.length}\n${segs.map((s) => `${s.offset}\n${s.bytes.length}\n`).join('')}`);
      body = [map, pad(map.length), ...segs.map((s) => s.bytes)];
      size = map.length + pad(map.length).length + segs.reduce((a, s) => a + s.bytes.length, 0);
      pax.push(record('GNU.sparse.major', enc.encode('1')), record('GNU.sparse.minor', enc.encode('0')));
      pax.push(record('GNU.sparse.name', path), record('GNU.sparse.realsize', enc.encode(String(e.sparse!.size))));
      const slash = path.lastIndexOf(0x2f);
      path = concat([path.subarray(0, slash + 1), enc.encode('GNUSparseFile.0/'), path.subarray(slash + 1)]).subarray(0, 100);
    } else if (e.data) body = [e.data];

    const binary = !isUtf8(path) || !isUtf8(linkname);
    if (binary && fmt === 'pax') pax.unshift(record('hdrcharset', enc.encode('BINARY')));

    // The name: in the header, split into ustar prefix + name, or in an extended header.
    let gnuLong: Uint8Array[] = [];
    if (path.length <= 100) h.set(path, F.name);
    else {
      const split = fmt === 'gnu' ? -1 : splitPoint(path);
      if (split > 0) {
        h.set(path.subarray(0, split), F.prefix);
        h.set(path.subarray(split + 1), F.name);
      } else if (fmt === 'pax') {
        pax.push(record('path', path));
        h.set(path.subarray(0, 100), F.name);
      } else if (fmt === 'gnu') {
        gnuLong.push(this.#longLink(0x4c, path));
        h.set(path.subarray(0, 100), F.name);
      } else refuse(`path of ${path.length} bytes does not fit`);
    }
    if (linkname.length <= 100) h.set(linkname, F.linkname);
    else if (fmt === 'pax') {
      pax.push(record('linkpath', linkname));
      h.set(linkname.subarray(0, 100), F.linkname);
    } else if (fmt === 'gnu') {
      gnuLong.push(this.#longLink(0x4b, linkname));
      h.set(linkname.subarray(0, 100), F.linkname);
    } else refuse(`link target of ${linkname.length} bytes does not fit`);

    const num = (off: number, len: number, v: number, key: string | undefined): void => {
      if (v >= 0 && v < 8 ** (len - 1)) h.set(enc.encode(v.toString(8).padStart(len - 1, '0')), off);
      else if (fmt === 'pax' && key) pax.push(record(key, enc.encode(String(v))));
      else if (fmt === 'gnu') base256(h, off, len, v);
      else refuse(`${key ?? 'a number'} ${v} does not fit`);
    };
    const mtime: TarTime = typeof e.mtime === 'number' ? { sec: e.mtime, nsec: 0 } : (e.mtime ?? { sec: 0, nsec: 0 });
    num(F.mode, 8, e.mode ?? (e.type === 'dir' ? 0o755 : 0o644), undefined);
    num(F.uid, 8, e.uid ?? 0, 'uid');
    num(F.gid, 8, e.gid ?? 0, 'gid');
    num(F.size, 12, size, 'size');
    if (mtime.nsec !== 0 || mtime.sec < 0) {
      if (fmt === 'pax') pax.push(record('mtime', enc.encode(timeText(mtime))));
      else if (mtime.nsec !== 0) refuse('fractional mtime needs the pax format');
    }
    num(F.mtime, 12, mtime.sec < 0 && fmt === 'pax' ? 0 : mtime.sec, 'mtime');
    for (const [key, t] of [['atime', e.atime], ['ctime', e.ctime]] as const) {
      if (t === undefined) continue;
      if (fmt !== 'pax') refuse(`${key} needs the pax format`);
      pax.push(record(key, enc.encode(timeText(t))));
    }
    h[F.typeflag] = TYPEFLAG[e.type];
    h.set(enc.encode(fmt === 'gnu' ? 'ustar  ' : 'ustar\x0000'), F.magic);
    h.set(enc.encode(e.uname ?? '').subarray(0, 32), F.uname);
    h.set(enc.encode(e.gname ?? '').subarray(0, 32), F.gname);
    if (e.type === 'chr' || e.type === 'blk') {
      // No PAX keyword for these that GNU tar and Python both read; Linux's (12, 20 bits) fit.
      num(F.devmajor, 8, e.devmajor ?? 0, undefined);
      num(F.devminor, 8, e.devminor ?? 0, undefined);
    }
    const xattrs = e.xattrs instanceof Map ? [...e.xattrs] : Object.entries(e.xattrs ?? {});
    if (xattrs.length > 0 && fmt !== 'pax') refuse('xattrs need the pax format');
    xattrs.sort(([a], [b]) => Buffer.compare(enc.encode(a), enc.encode(b)));
    for (const [k, v] of xattrs) pax.push(record(`SCHILY.xattr.${k}`, bytesOf(v)));
    checksum(h);

    if (pax.length > 0) parts.push(this.#extended(0x78, concat(pax)));
    parts.push(...gnuLong, h);
    for (const b of body) parts.push(b);
    parts.push(pad(size));
    return concat(parts);
  }

  /** An extended header member ('x' PAX, 'L'/'K' GNU) holding `data`. */
  #extended(type: number, data: Uint8Array): Uint8Array {
    const h = new Uint8Array(BLOCK);
    h.set(enc.encode(type === 0x78 ? '././@PaxHeader' : '././@LongLink'), F.name);
    h.set(enc.encode('0000644'), F.mode);
    h.set(enc.encode('0000000'), F.uid);
    h.set(enc.encode('0000000'), F.gid);
    h.set(enc.encode(data.length.toString(8).padStart(11, '0')), F.size);
    h.set(enc.encode('00000000000'), F.mtime);
    h[F.typeflag] = type;
    h.set(enc.encode(this.#format === 'gnu' ? 'ustar  ' : 'ustar\x0000'), F.magic);
    checksum(h);
    return concat([h, data, pad(data.length)]);
  }

  #longLink(type: number, name: Uint8Array): Uint8Array {
    return this.#extended(type, concat([name, new Uint8Array(1)]));
  }
}

/** Where to cut a long path into ustar prefix (≤ 155) and name (≤ 100, non-empty); -1 if nowhere. */
function splitPoint(path: Uint8Array): number {
  for (let i = Math.min(155, path.length - 2); i > 0; i--) {
    if (path[i] === 0x2f && path.length - i - 1 <= 100) return i;
  }
  return -1;
}

function base256(h: Uint8Array, off: number, len: number, v: number): void {
  let x = BigInt(v);
  if (x < 0n) x += 1n << BigInt(8 * len);
  for (let i = off + len - 1; i > off; i--) {
    h[i] = Number(x & 0xffn);
    x >>= 8n;
  }
  h[off] = v < 0 ? 0xff : 0x80;
}

function checksum(h: Uint8Array): void {
  h.fill(0x20, F.chksum, F.chksum + 8);
  let s = 0;
  for (let i = 0; i < BLOCK; i++) s += h[i]!;
  h.set(enc.encode(s.toString(8).padStart(6, '0')), F.chksum);
  h[F.chksum + 6] = 0;
  h[F.chksum + 7] = 0x20;
}

/** A whole archive in memory. */
export function tarBytes(entries: Iterable<WriteEntry>, opts?: TarWriterOptions): Uint8Array {
  const w = new TarWriter(opts);
  const parts: Uint8Array[] = [];
  for (const e of entries) parts.push(w.entry(e));
  parts.push(w.end());
  return concat(parts);
}

/** An archive as a stream of chunks (one per member), for entries produced lazily. */
export async function* writeTar(entries: Iterable<WriteEntry> | AsyncIterable<WriteEntry>, opts?: TarWriterOptions): AsyncGenerator<Uint8Array> {
  const w = new TarWriter(opts);
  for await (const e of entries) yield w.entry(e);
  yield w.end();
}

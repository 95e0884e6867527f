/**
 * A small deterministic tar writer for the benchmark's images: POSIX ustar headers, a PAX
 * extended header where ustar cannot hold a field (long path or link target, xattrs as
 * SCHILY.xattr.*), and the archive ended by two zero blocks as Go's archive/tar (what
 * registries' layers are made with) ends it. Output depends only on the entries given.
 */

export type OutType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'chr' | 'blk' | 'fifo';

export interface OutEntry {
  /** Relative path, no leading "/" (a directory without its trailing "/"). */
  path: string;
  type: OutType;
  mode: number;
  uid: number;
  gid: number;
  /** Whole seconds. */
  mtime: number;
  /** Regular files: the content's size; `data` yields exactly this many bytes. */
  size?: number;
  data?: () => AsyncIterable<Uint8Array>;
  linkname?: string;
  dev?: { major: number; minor: number };
  xattrs?: Record<string, Uint8Array>;
}

const BLOCK = 512;
const TYPEFLAG: Record<OutType, string> = { file: '0', hardlink: '1', symlink: '2', chr: '3', blk: '4', dir: '5', fifo: '6' };
const enc = new TextEncoder();

function octal(h: Uint8Array, off: number, len: number, v: number): void {
  const s = v.toString(8).padStart(len - 1, '0');
  if (s.length > len - 1) throw new RangeError(`tar: ${v} does not fit a ${len}-byte octal field`);
  h.set(enc.encode(s), off);
}

/** Splits a path into ustar's prefix and name fields, or undefined when it cannot. */
function split(p: Uint8Array): { prefix: Uint8Array; name: Uint8Array } | undefined {
  if (p.length <= 100) return { prefix: new Uint8Array(0), name: p };
  for (let i = p.length - 1; i > 0; i--) {
    if (p[i] !== 0x2f) continue;
    if (i > 155) continue;
    if (p.length - i - 1 > 100) return undefined;
    return { prefix: p.subarray(0, i), name: p.subarray(i + 1) };
  }
  return undefined;
}

function header(name: Uint8Array, prefix: Uint8Array, e: OutEntry, typeflag: string, size: number, linkname: Uint8Array): Uint8Array {
  const h = new Uint8Array(BLOCK);
  h.set(name.subarray(0, 100), 0);
  octal(h, 100, 8, e.mode & 0o7777);
  octal(h, 108, 8, e.uid);
  octal(h, 116, 8, e.gid);
  octal(h, 124, 12, size);
  octal(h, 136, 12, e.mtime);
  h[156] = typeflag.charCodeAt(0);
  h.set(linkname.subarray(0, 100), 157);
  h.set(enc.encode('ustar\u000000'), 257);
  octal(h, 329, 8, e.dev?.major ?? 0);
  octal(h, 337, 8, e.dev?.minor ?? 0);
  h.set(prefix, 345);
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += h[i]!;
  octal(h, 148, 7, sum);
  return h;
}

/** One PAX record, "<len> key=value\n", where len counts the whole record. */
function paxRecord(key: string, value: Uint8Array): Uint8Array {
  const body = new Uint8Array([...enc.encode(` ${key}=`), ...value, 0x0a]);
  let len = body.length + 1;
  while (String(len).length + body.length > len) len++;
  return new Uint8Array([...enc.encode(String(len)), ...body]);
}

const padding = (n: number) => new Uint8Array((BLOCK - (n % BLOCK)) % BLOCK);

/** The archive's bytes for `entries`, in order, as a stream of chunks. */
export async function* tarStream(entries: Iterable<OutEntry> | AsyncIterable<OutEntry>): AsyncGenerator<Uint8Array> {
  for await (const e of entries) {
    const full = enc.encode(e.type === 'dir' ? `${e.path}/` : e.path);
    const link = enc.encode(e.linkname ?? '');
    const size = e.type === 'file' ? e.size ?? 0 : 0;
    const records: Uint8Array[] = [];
    const parts = split(full);
    if (!parts) records.push(paxRecord('path', full));
    if (link.length > 100) records.push(paxRecord('linkpath', link));
    for (const [k, v] of Object.entries(e.xattrs ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) records.push(paxRecord(`SCHILY.xattr.${k}`, v));
    if (records.length) {
      const body = Buffer.concat(records);
      const base = e.path.slice(e.path.lastIndexOf('/') + 1);
      yield header(enc.encode(`PaxHeaders/${base}`.slice(0, 99)), new Uint8Array(0), { ...e, mode: 0o644 }, 'x', body.length, new Uint8Array(0));
      yield body;
      yield padding(body.length);
    }
    const { prefix, name } = parts ?? { prefix: new Uint8Array(0), name: full.subarray(0, 100) };
    yield header(name, prefix, e, TYPEFLAG[e.type], size, link);
    if (e.type !== 'file' || size === 0) continue;
    let written = 0;
    for await (const chunk of e.data!()) {
      written += chunk.length;
      yield chunk;
    }
    if (written !== size) throw new Error(`tar: ${e.path}: data gave ${written} bytes, header says ${size}`);
    yield padding(size);
  }
  yield new Uint8Array(2 * BLOCK);
}

/**
 * What the tar tests share: our reader's entries as comparable records (contents by sha256,
 * holes read as zeros), the same records from Python's tarfile (list.py) and GNU tar's listing,
 * and input splitting.
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readTar } from '../../src/tar/reader.ts';
import type { TarEntry } from '../../src/tar/types.ts';

export interface Listed {
  path: string; type: string; mode: number; uid: number; gid: number; mtime: string; size: number;
  linkname: string; devmajor: number; devminor: number; xattrs: Record<string, string>; sha256: string;
}

const HERE = path.dirname(fileURLToPath(import.meta.url));
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** PAX-style time text ("1.5", "-2.25", "7"), as Python prints pax_headers['mtime']. */
export function timeText(t: { sec: number; nsec: number }): string {
  if (t.nsec === 0) return String(t.sec);
  const neg = t.sec < 0;
  const whole = neg ? -(t.sec + 1) : t.sec;
  const frac = String(neg ? 1e9 - t.nsec : t.nsec).padStart(9, '0').replace(/0+$/, '');
  return `${neg ? '-' : ''}${whole}.${frac}`;
}

/** Canonical time text for comparing a PAX mtime string with ours (trailing zeros dropped). */
export function canonTime(s: string): string {
  if (!s.includes('.')) return s;
  const t = s.replace(/0+$/, '').replace(/\.$/, '');
  return t;
}

const ZEROS = new Uint8Array(1 << 16);

/** An entry as a record; its content hashed with holes as zeros (checks offsets too). */
export async function listed(e: TarEntry): Promise<Listed> {
  const h = createHash('sha256');
  let at = 0;
  for await (const { offset, bytes } of e.data()) {
    if (offset < at) throw new Error(`piece at ${offset} goes back (at ${at})`);
    for (; at < offset; at += Math.min(ZEROS.length, offset - at)) h.update(ZEROS.subarray(0, Math.min(ZEROS.length, offset - at)));
    h.update(bytes);
    at += bytes.length;
  }
  for (; at < e.size; at += Math.min(ZEROS.length, e.size - at)) h.update(ZEROS.subarray(0, Math.min(ZEROS.length, e.size - at)));
  return {
    path: hex(e.path), type: e.type, mode: e.mode, uid: e.uid, gid: e.gid, mtime: timeText(e.mtime), size: e.size,
    linkname: hex(e.linkname), devmajor: e.devmajor, devminor: e.devminor,
    xattrs: Object.fromEntries([...e.xattrs].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => [k, hex(v)])),
    sha256: h.digest('hex'),
  };
}

export async function listOurs(chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, name = 'test'): Promise<Listed[]> {
  const out: Listed[] = [];
  const input = Symbol.asyncIterator in chunks ? chunks : (async function* () { yield* chunks; })();
  for await (const e of readTar(input, { name })) out.push(await listed(e));
  return out;
}

export function listPython(file: string): Listed[] {
  const out = JSON.parse(execFileSync('python3', [path.join(HERE, 'list.py'), file], { maxBuffer: 1 << 28 }).toString()) as Listed[];
  for (const l of out) {
    l.mtime = canonTime(l.mtime);
    l.xattrs = Object.fromEntries(Object.entries(l.xattrs).sort(([a], [b]) => (a < b ? -1 : 1)));
  }
  return out;
}

/** GNU tar's view: `tar -tvv --numeric-owner` fields (type, mode, owner, size or device, name, target). */
export interface GnuListed { type: string; mode: number; uid: number; gid: number; size: string; path: string; link: string }

/** Undoes --quoting-style=escape (\ooo, \\, and C escapes) into raw bytes, as hex. */
function unescape(s: string): Buffer {
  const out: number[] = [];
  const C: Record<string, number> = { n: 10, t: 9, r: 13, a: 7, b: 8, f: 12, v: 11, '\\': 92, ' ': 32 };
  const raw = Buffer.from(s, 'utf8');
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] !== 0x5c) {
      out.push(raw[i]!);
      continue;
    }
    const rest = raw.subarray(i + 1, i + 4).toString('latin1');
    if (/^[0-7]{3}$/.test(rest)) {
      out.push(parseInt(rest, 8));
      i += 3;
    } else {
      out.push(C[String.fromCharCode(raw[i + 1]!)] ?? raw[i + 1]!);
      i += 1;
    }
  }
  return Buffer.from(out);
}

const norm = (b: Buffer): Buffer => Buffer.from(b.toString('latin1').split('/').filter((c) => c !== '' && c !== '.').join('/'), 'latin1');

export function listGnu(file: string): GnuListed[] {
  const text = execFileSync('tar', ['-tvv', '--numeric-owner', '--quoting-style=escape', '--full-time', '-f', file], {
    maxBuffer: 1 << 28, env: { ...process.env, TZ: 'UTC', LC_ALL: 'C' },
  }).toString('utf8');
  const out: GnuListed[] = [];
  for (const line of text.split('\n')) {
    const m = /^(.)([-rwxsStT]{9}) (\d+)\/(\d+) +(\S+) \S+ \S+ (.*)$/.exec(line);
    if (!m) continue;
    let name = m[6]!.replace(/^ +/, ''); // tar widens the owner/size columns with spaces
    let link = '';
    const sym = name.indexOf(' -> ');
    const hard = name.indexOf(' link to ');
    if (m[1] === 'l' && sym >= 0) [name, link] = [name.slice(0, sym), name.slice(sym + 4)];
    else if (hard >= 0) [name, link] = [name.slice(0, hard), name.slice(hard + 9)];
    out.push({
      type: m[1]!, mode: modeBits(m[2]!), uid: Number(m[3]), gid: Number(m[4]), size: m[5]!,
      path: norm(unescape(name)).toString('hex'),
      link: (hard >= 0 ? norm(unescape(link)) : unescape(link)).toString('hex'),
    });
  }
  return out;
}

function modeBits(s: string): number {
  let m = 0;
  const bit = (i: number, v: number) => { if (s[i] !== '-' && s[i] !== 'S' && s[i] !== 'T') m |= v; };
  for (let i = 0; i < 9; i++) bit(i, 1 << (8 - i));
  if (s[2] === 's' || s[2] === 'S') m |= 0o4000;
  if (s[5] === 's' || s[5] === 'S') m |= 0o2000;
  if (s[8] === 't' || s[8] === 'T') m |= 0o1000;
  return m;
}

/** Our records in GNU tar's terms, for comparing with listGnu. */
export function asGnu(l: Listed): GnuListed {
  const type = { file: '-', hardlink: 'h', symlink: 'l', chr: 'c', blk: 'b', dir: 'd', fifo: 'p' }[l.type]!;
  return {
    type, mode: l.mode, uid: l.uid, gid: l.gid, path: l.path, link: l.linkname,
    size: type === 'c' || type === 'b' ? `${l.devmajor},${l.devminor}` : String(l.size),
  };
}

/** `buf` cut at the given sizes (cycled), as chunks that are views of it. */
export function split(buf: Uint8Array, sizes: readonly number[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  let i = 0;
  for (let p = 0; p < buf.length; i++) {
    const n = Math.max(1, sizes[i % sizes.length]!);
    out.push(buf.subarray(p, p + n));
    p += n;
  }
  return out;
}

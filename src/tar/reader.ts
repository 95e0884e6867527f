/**
 * The streaming tar reader: ustar, GNU and PAX archives (and v7) as one sequence of entries,
 * extended headers folded into the entry they describe. Reads its input front to back once,
 * holds one input chunk and at most one extended header (≤ 16 MiB) at a time, and hands entry
 * data out as views of the input chunks.
 *
 * Member types: '0', '\0', '7' files ('\0'/'0' named with a trailing "/" are directories, the old
 * convention GNU tar follows), '1' hard link, '2' symlink, '3'/'4' devices, '5' directory, '6'
 * fifo, 'S' old GNU sparse file, 'D' GNU dumpdir (a directory; its listing is skipped), 'x'/'X'
 * and 'g' PAX, 'L'/'K' GNU long names. 'V' (a volume label: says nothing about the tree) is
 * skipped with a warning. Any other type (e.g. 'M', a multi-volume continuation) is refused:
 * applying half a file, or guessing what a vendor type means, would give a tree that differs
 * from the source without saying so. As in Go's archive/tar (what containerd applies layers
 * with), types 1–6 store no data whatever their size field says.
 *
 * The end: the first all-zero block (GNU tar stops there too; the second one and anything
 * after are read and ignored, so a digest over the input covers the whole stream), or the end
 * of the input at a member boundary (as GNU tar, Go and Python accept). The end of the input
 * anywhere else is a TarFormatError naming the offset of the header it cut.
 */
import { TarError, TarFormatError } from './errors.ts';
import { BLOCK, blockSum, checksumOk, F, headerFormat, number, text, type HeaderFormat } from './header.ts';
import { TarInput } from './input.ts';
import { normalizePath } from './path.ts';
import { ascii, decimal, emptyRecords, mergeGlobal, parsePax, paxTime, type PaxRecords } from './pax.ts';
import { checkedMap, gnuSparseEntries, paxSparseMap, sparse10Map, type Segment } from './sparse.ts';
import type { ReadTarOptions, TarEntry, TarTime, TarType } from './types.ts';

/** Extended headers (PAX data, long names, sparse maps) larger than this are refused. */
export const MAX_META = 16 << 20;

const C = {
  x: 0x78, X: 0x58, g: 0x67, L: 0x4c, K: 0x4b, V: 0x56, S: 0x53, D: 0x44,
  nul: 0, '0': 0x30, '1': 0x31, '2': 0x32, '3': 0x33, '4': 0x34, '5': 0x35, '6': 0x36, '7': 0x37,
} as const;

const TYPES: Readonly<Record<number, TarType>> = {
  [C.nul]: 'file', [C['0']]: 'file', [C['7']]: 'file', [C.S]: 'file',
  [C['1']]: 'hardlink', [C['2']]: 'symlink', [C['3']]: 'chr', [C['4']]: 'blk',
  [C['5']]: 'dir', [C.D]: 'dir', [C['6']]: 'fifo',
};

const padding = (n: number): number => (BLOCK - (n % BLOCK)) % BLOCK;

export async function* readTar(input: AsyncIterable<Uint8Array>, opts: ReadTarOptions = {}): AsyncGenerator<TarEntry, void, undefined> {
  const archive = opts.name ?? 'tar stream';
  const inp = new TarInput(input);
  const global = new Map<string, Uint8Array>();
  let local: PaxRecords | undefined;
  let longName: Uint8Array | undefined;
  let longLink: Uint8Array | undefined;
  let pendingAt = -1;
  let completed = false;

  const meta = async (size: number, at: number, what: string): Promise<Uint8Array> => {
    if (size > MAX_META) throw new TarFormatError(archive, at, `${what} of ${size} bytes is over the ${MAX_META}-byte limit`);
    const d = await inp.read(size);
    if (d.length < size) throw truncated(archive, at, inp.offset);
    await skipExactly(inp, padding(size), archive, at);
    return d;
  };

  try {
    for (;;) {
      const at = inp.offset;
      const h = inp.buffered >= BLOCK ? inp.take(BLOCK) : await inp.read(BLOCK);
      const sum = h.length === BLOCK ? blockSum(h) : -1;
      if (h.length === 0 || sum === 0) {
        if (pendingAt >= 0) throw new TarFormatError(archive, pendingAt, 'the archive ends after an extended header, without its member');
        break;
      }
      if (h.length < BLOCK) throw new TarFormatError(archive, at, `truncated header: the input ends after ${h.length} of its 512 bytes`);
      if (!checksumOk(h, sum)) throw new TarFormatError(archive, at, 'header checksum mismatch (not a tar header, or a corrupt one)');
      const tf = h[F.typeflag]!;
      const stored = number(h, F.size, 12);
      if (stored === undefined || stored < 0) throw new TarFormatError(archive, at, 'bad size field');
      if (tf === C.x || tf === C.X || tf === C.g || tf === C.L || tf === C.K) {
        const d = await meta(stored, at, 'extended header');
        if (tf === C.g) {
          const recs = emptyRecords();
          parsePax(d, recs, archive, at);
          mergeGlobal(global, recs);
          continue;
        }
        if (pendingAt < 0) pendingAt = at;
        if (tf === C.L) longName = text(d, 0, d.length).slice();
        else if (tf === C.K) longLink = text(d, 0, d.length).slice();
        else parsePax(d, (local ??= emptyRecords()), archive, at);
        continue;
      }
      if (tf === C.V) {
        opts.onWarning?.({ archive, offset: at, message: 'volume label member skipped' });
        await skipExactly(inp, stored + padding(stored), archive, at);
        pendingAt = -1;
        local = longName = longLink = undefined;
        continue;
      }
      const made = await member(inp, h, headerFormat(h), tf, stored, at, archive, local, global, longName, longLink);
      pendingAt = -1;
      local = longName = longLink = undefined;
      yield made.entry;
      await made.body.finish();
    }
    completed = true;
    await inp.drain();
  } finally {
    if (!completed) await inp.close();
  }
}

function truncated(archive: string, at: number, end: number): TarFormatError {
  return new TarFormatError(archive, at, `truncated member: the input ends at ${end}`);
}

async function skipExactly(inp: TarInput, n: number, archive: string, at: number): Promise<void> {
  if (n === 0) return;
  if (inp.buffered >= n) inp.advance(n);
  else if ((await inp.skip(n)) < n) throw truncated(archive, at, inp.offset);
}

/** A member's stored data: handed out once through data(), the rest skipped by finish(). */
class Body {
  readonly #inp: TarInput;
  readonly #segments: Segment[] | undefined;
  readonly #archive: string;
  readonly #at: number;
  #remaining: number;
  #pad: number;
  #started = false;
  #closed = false;

  constructor(inp: TarInput, stored: number, segments: Segment[] | undefined, archive: string, at: number) {
    this.#inp = inp;
    this.#remaining = stored;
    this.#pad = padding(stored);
    this.#segments = segments;
    this.#archive = archive;
    this.#at = at;
  }

  data(): AsyncIterable<{ offset: number; bytes: Uint8Array }> {
    if (this.#started || this.#closed) {
      throw new TarError(this.#archive, this.#at, 'entry data can be read once, before asking for the next entry');
    }
    this.#started = true;
    return this.#segments ? this.#sparse(this.#segments) : this.#range(0, this.#remaining);
  }

  async *#sparse(segments: Segment[]): AsyncGenerator<{ offset: number; bytes: Uint8Array }> {
    for (const s of segments) yield* this.#range(s.offset, s.length);
  }

  async *#range(offset: number, length: number): AsyncGenerator<{ offset: number; bytes: Uint8Array }> {
    let done = 0;
    while (done < length) {
      if (this.#closed) throw new TarError(this.#archive, this.#at, 'entry data read after asking for the next entry');
      const inp = this.#inp;
      const bytes = inp.buffered > 0 ? inp.take(Math.min(length - done, inp.buffered)) : await inp.piece(length - done);
      if (bytes.length === 0) throw truncated(this.#archive, this.#at, inp.offset);
      this.#remaining -= bytes.length;
      const o = offset + done;
      done += bytes.length;
      yield { offset: o, bytes };
    }
  }

  async finish(): Promise<void> {
    this.#closed = true;
    const n = this.#remaining + this.#pad;
    this.#remaining = this.#pad = 0;
    await skipExactly(this.#inp, n, this.#archive, this.#at);
  }
}

const NO_BYTES = new Uint8Array(0);

/** Builds the entry for header `h` with the extended headers that preceded it. */
async function member(
  inp: TarInput, h: Uint8Array, fmt: HeaderFormat, tf: number, stored: number, at: number, archive: string,
  local: PaxRecords | undefined, global: Map<string, Uint8Array>,
  longName: Uint8Array | undefined, longLink: Uint8Array | undefined,
): Promise<{ entry: TarEntry; body: Body }> {
  // A local record with an empty value deletes the key (POSIX): the header field applies.
  const rec = (key: string): Uint8Array | undefined => {
    const v = local?.map.get(key);
    if (v !== undefined) return v.length > 0 ? v : undefined;
    return local?.map.has(key) ? undefined : global.get(key);
  };
  const field = (off: number, len: number, what: string): number => {
    const v = number(h, off, len);
    if (v === undefined) throw new TarFormatError(archive, at, `bad ${what} field`);
    return v;
  };
  const paxNumber = (key: string, fallback: () => number): number => {
    const v = rec(key);
    if (v === undefined) return fallback();
    const n = decimal(v);
    if (n === undefined) throw new TarFormatError(archive, at, `bad PAX ${key} "${ascii(v)}"`);
    return n;
  };
  const paxTimeOf = (key: string): TarTime | undefined => {
    const v = rec(key);
    if (v === undefined) return undefined;
    const t = paxTime(v);
    if (t === undefined) throw new TarFormatError(archive, at, `bad PAX ${key} "${ascii(v)}"`);
    return t;
  };

  let type = TYPES[tf];
  if (type === undefined) {
    const shown = tf >= 0x20 && tf < 0x7f ? `'${String.fromCharCode(tf)}'` : `0x${tf.toString(16)}`;
    throw new TarFormatError(archive, at, `member type ${shown} is not supported`);
  }

  let rawPath = rec('GNU.sparse.name') ?? rec('path') ?? longName;
  if (rawPath === undefined) {
    const name = text(h, F.name, 100);
    const prefix = fmt === 'ustar' ? text(h, F.prefix, 155) : NO_BYTES;
    if (prefix.length === 0) rawPath = name;
    else {
      rawPath = new Uint8Array(prefix.length + 1 + name.length);
      rawPath.set(prefix);
      rawPath[prefix.length] = 0x2f;
      rawPath.set(name, prefix.length + 1);
    }
  }
  if (type === 'file' && tf !== C.S && rawPath[rawPath.length - 1] === 0x2f) type = 'dir';
  const path = normalizePath(rawPath, archive, at);

  const mode = field(F.mode, 8, 'mode') & 0o7777;
  const uid = paxNumber('uid', () => field(F.uid, 8, 'uid'));
  const gid = paxNumber('gid', () => field(F.gid, 8, 'gid'));
  const mtime = paxTimeOf('mtime') ?? { sec: field(F.mtime, 12, 'mtime'), nsec: 0 };
  let atime = paxTimeOf('atime');
  let ctime = paxTimeOf('ctime');
  if (fmt === 'gnu') {
    const a = number(h, F.gnuAtime, 12);
    const c = number(h, F.gnuCtime, 12);
    if (atime === undefined && a) atime = { sec: a, nsec: 0 };
    if (ctime === undefined && c) ctime = { sec: c, nsec: 0 };
  }
  let dataSize = paxNumber('size', () => stored);
  if (type !== 'file' && tf !== C.D) dataSize = 0;

  let linkname: Uint8Array = NO_BYTES;
  if (type === 'hardlink' || type === 'symlink') {
    const raw = rec('linkpath') ?? longLink ?? text(h, F.linkname, 100);
    if (raw.length === 0) throw new TarFormatError(archive, at, `${type} without a target`);
    linkname = type === 'hardlink' ? normalizePath(raw, archive, at, 'hard link target') : raw.slice();
  }
  let devmajor = 0;
  let devminor = 0;
  if (type === 'chr' || type === 'blk') {
    const header = fmt !== 'v7';
    devmajor = paxNumber('SCHILY.devmajor', () => (header ? field(F.devmajor, 8, 'devmajor') : 0));
    devminor = paxNumber('SCHILY.devminor', () => (header ? field(F.devminor, 8, 'devminor') : 0));
  }
  const xattrs = new Map<string, Uint8Array>();
  addXattrs(global, xattrs);
  if (local) addXattrs(local.map, xattrs);

  let size = type === 'file' ? dataSize : 0;
  let sparse: Segment[] | undefined;
  if (type === 'file') {
    let map: Segment[] | undefined;
    let realSize = dataSize;
    if (tf === C.S) {
      if (fmt !== 'gnu') throw new TarFormatError(archive, at, "sparse member (type 'S') without a GNU header");
      map = [];
      gnuSparseEntries(h, F.gnuSparse, 4, map, archive, at);
      let more = h[F.gnuIsExtended] !== 0;
      while (more) {
        const ext = await inp.read(BLOCK);
        if (ext.length < BLOCK) throw truncated(archive, at, inp.offset);
        gnuSparseEntries(ext, 0, 21, map, archive, at);
        more = ext[504] !== 0;
        if (map.length > MAX_META / 24) throw new TarFormatError(archive, at, 'old GNU sparse map is too long');
      }
      realSize = field(F.gnuRealSize, 12, 'realsize');
    } else if (rec('GNU.sparse.major') !== undefined) {
      const major = ascii(rec('GNU.sparse.major')!);
      const minor = ascii(rec('GNU.sparse.minor') ?? NO_BYTES);
      if (major !== '1' || minor !== '0') throw new TarFormatError(archive, at, `GNU sparse format ${major}.${minor} is not supported`);
      realSize = paxNumber('GNU.sparse.realsize', () => {
        throw new TarFormatError(archive, at, 'sparse 1.0 member without GNU.sparse.realsize');
      });
      let buf: Uint8Array = NO_BYTES;
      for (;;) {
        if (dataSize < BLOCK || buf.length >= MAX_META) throw new TarFormatError(archive, at, 'sparse 1.0 map does not fit in the member');
        const b = await inp.read(BLOCK);
        if (b.length < BLOCK) throw truncated(archive, at, inp.offset);
        const next = new Uint8Array(buf.length + BLOCK);
        next.set(buf);
        next.set(b, buf.length);
        buf = next;
        dataSize -= BLOCK;
        const parsed = sparse10Map(buf, archive, at);
        if (parsed) {
          map = parsed.map;
          break;
        }
      }
    } else if (local && (map = paxSparseMap(local, archive, at))) {
      realSize = paxNumber('GNU.sparse.size', () => paxNumber('GNU.sparse.realsize', () => dataSize));
    }
    if (map) {
      sparse = checkedMap(map, realSize, dataSize, archive, at);
      size = realSize;
    }
  }
  const body = new Body(inp, dataSize, sparse, archive, at);
  const entry: TarEntry = {
    path, type, mode, uid, gid, mtime, size, linkname, devmajor, devminor, xattrs,
    data: () => body.data(),
  };
  if (atime) entry.atime = atime;
  if (ctime) entry.ctime = ctime;
  if (sparse) entry.sparse = sparse;
  return { entry, body };
}

const SCHILY = 'SCHILY.xattr.';
const LIBARCHIVE = 'LIBARCHIVE.xattr.';

/** SCHILY.xattr.NAME=bytes and LIBARCHIVE.xattr.URL-ENCODED-NAME=base64 records into `out`. */
function addXattrs(records: Map<string, Uint8Array>, out: Map<string, Uint8Array>): void {
  for (const [k, v] of records) {
    if (k.startsWith(SCHILY)) out.set(k.slice(SCHILY.length), v);
    else if (k.startsWith(LIBARCHIVE)) {
      const name = k.slice(LIBARCHIVE.length);
      let decoded = name;
      try {
        decoded = decodeURIComponent(name);
      } catch {
        // Not valid percent-encoding of UTF-8: keep the name as written.
      }
      const b = Buffer.from(ascii(v), 'base64');
      out.set(decoded, new Uint8Array(b.buffer, b.byteOffset, b.length));
    }
  }
}

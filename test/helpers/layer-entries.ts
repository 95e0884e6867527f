/**
 * Tar entries for the layer applier's tests, built directly (the shape src/tar's reader
 * yields), so the semantics are tested apart from tar parsing. Paths are given as strings
 * (latin1: one char per byte, so any byte can be written) or bytes.
 */
import type { ApplyEntry, Timespec } from '../../src/convert/apply.ts';

export type EntryOptions = Partial<Pick<ApplyEntry, 'mode' | 'uid' | 'gid' | 'mtime' | 'atime' | 'ctime'>> & {
  xattrs?: Record<string, string | Uint8Array>;
};

const T0: Timespec = { sec: 1_600_000_000, nsec: 123_456_789 };

export function bytesOf(s: string | Uint8Array): Uint8Array {
  return typeof s === 'string' ? Uint8Array.from(s, (c) => c.charCodeAt(0) & 0xff) : s;
}

function base(path: string | Uint8Array, type: ApplyEntry['type'], o: EntryOptions): ApplyEntry {
  const xattrs = new Map<string, Uint8Array>();
  for (const [k, v] of Object.entries(o.xattrs ?? {})) xattrs.set(k, typeof v === 'string' ? new TextEncoder().encode(v) : v);
  return {
    path: bytesOf(path), type, mode: o.mode ?? (type === 'dir' ? 0o755 : 0o644), uid: o.uid ?? 0, gid: o.gid ?? 0,
    mtime: o.mtime ?? T0, atime: o.atime, ctime: o.ctime, size: 0, linkname: new Uint8Array(), devmajor: 0, devminor: 0,
    xattrs, data: () => noData(),
  };
}

async function* noData(): AsyncIterable<{ offset: number; bytes: Uint8Array }> {}

/** A regular file; content given as bytes/string (yielded in `chunk`-byte pieces) or as sparse segments. */
export function file(path: string | Uint8Array, content: string | Uint8Array, o: EntryOptions & { chunk?: number } = {}): ApplyEntry {
  const bytes = bytesOf(content);
  const e = base(path, 'file', o);
  e.size = bytes.length;
  const chunk = o.chunk ?? 64 * 1024;
  e.data = async function* () {
    for (let off = 0; off < bytes.length; off += chunk) yield { offset: off, bytes: bytes.subarray(off, off + chunk) };
  };
  return e;
}

/** A sparse file of `size` bytes whose data segments are `segments` (offset → content). */
export function sparseFile(path: string, size: number, segments: Array<[number, string | Uint8Array]>, o: EntryOptions = {}): ApplyEntry {
  const e = base(path, 'file', o);
  e.size = size;
  const segs = segments.map(([offset, c]) => ({ offset, bytes: bytesOf(c) }));
  e.sparse = segs.map((s) => ({ offset: s.offset, length: s.bytes.length }));
  e.data = async function* () {
    yield* segs;
  };
  return e;
}

export function dir(path: string | Uint8Array, o: EntryOptions = {}): ApplyEntry {
  return base(path, 'dir', o);
}

export function symlink(path: string | Uint8Array, target: string | Uint8Array, o: EntryOptions = {}): ApplyEntry {
  const e = base(path, 'symlink', { mode: 0o777, ...o });
  e.linkname = bytesOf(target);
  return e;
}

export function hardlink(path: string | Uint8Array, target: string | Uint8Array, o: EntryOptions = {}): ApplyEntry {
  const e = base(path, 'hardlink', o);
  e.linkname = bytesOf(target);
  return e;
}

export function device(path: string, type: 'chr' | 'blk', major: number, minor: number, o: EntryOptions = {}): ApplyEntry {
  const e = base(path, type, o);
  e.devmajor = major;
  e.devminor = minor;
  return e;
}

export function fifo(path: string, o: EntryOptions = {}): ApplyEntry {
  return base(path, 'fifo', o);
}

/** `.wh.NAME` next to `path`. */
export function whiteout(path: string): ApplyEntry {
  const slash = path.lastIndexOf('/');
  return file(`${path.slice(0, slash + 1)}.wh.${path.slice(slash + 1)}`, '');
}

/** The opaque marker of directory `dirPath` ("" for the root). */
export function opaque(dirPath: string): ApplyEntry {
  return file(dirPath ? `${dirPath}/.wh..wh..opq` : '.wh..wh..opq', '');
}

export async function* stream(entries: ApplyEntry[]): AsyncIterable<ApplyEntry> {
  yield* entries;
}

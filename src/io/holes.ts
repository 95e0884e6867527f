/**
 * File holes, which Node's fs does not reach: lseek(SEEK_DATA / SEEK_HOLE) to find where a
 * sparse file holds data, and fallocate(PUNCH_HOLE | KEEP_SIZE) to give a range back. Sparse
 * writable layers (docs/format.md §2.12) are defined by them. The calls go to libc (./libc.ts).
 */
import { NotSupportedError } from './errors.ts';
import { wrapFsError } from './file.ts';
import { libc as loadLibc } from './libc.ts';

const SEEK_DATA = 3;
const SEEK_HOLE = 4;
const FALLOC_FL_KEEP_SIZE = 1;
const FALLOC_FL_PUNCH_HOLE = 2;
const ENXIO = 6;

interface Libc {
  lseek(fd: number, offset: number, whence: number): number;
  fallocate(fd: number, mode: number, offset: number, len: number): number;
  errno(): number;
}

let libc: Libc | undefined;

function load(): Libc {
  if (libc) return libc;
  const { koffi, lib } = loadLibc('sparse files (SEEK_DATA/SEEK_HOLE and hole punching)');
  // koffi passes and returns 64-bit integers as JS numbers (exact up to 2^53, past every disk accepted here).
  const lseek = lib.func('int64_t lseek64(int fd, int64_t offset, int whence)');
  const fallocate = lib.func('int fallocate64(int fd, int mode, int64_t offset, int64_t len)');
  libc = { lseek, fallocate, errno: () => koffi.errno() };
  return libc;
}

/** A system error shaped as Node's fs errors are (code, errno, syscall), for the usual wrappers. */
function errnoError(file: string, what: string, errno: number): NodeJS.ErrnoException {
  const names: Record<number, string> = { 9: 'EBADF', 22: 'EINVAL', 95: 'EOPNOTSUPP', 28: 'ENOSPC', 5: 'EIO', 1: 'EPERM', 13: 'EACCES', 27: 'EFBIG' };
  const code = names[errno] ?? `E${errno}`;
  return Object.assign(new Error(`${code}: ${what} on ${file}`), { code, errno: -errno, syscall: what });
}

/**
 * The data extents of the file open as `fd`, in bytes, from `from` to its end: [start, end)
 * pairs as SEEK_DATA / SEEK_HOLE report them (whole filesystem blocks).
 */
export function dataExtents(fd: number, file: string, from: number): [number, number][] {
  const c = load();
  const out: [number, number][] = [];
  let pos = from;
  for (;;) {
    const start = Number(c.lseek(fd, pos, SEEK_DATA));
    if (start < 0) {
      const e = c.errno();
      if (e === ENXIO) return out;
      throw wrapFsError(file, errnoError(file, 'lseek(SEEK_DATA)', e));
    }
    const end = Number(c.lseek(fd, start, SEEK_HOLE));
    if (end <= start) throw wrapFsError(file, errnoError(file, 'lseek(SEEK_HOLE)', c.errno()));
    out.push([start, end]);
    pos = end;
  }
}

/**
 * Deallocates [offset, offset+length) of `fd`, keeping the file size; the range reads as
 * zeros. Failures are thrown as Node-style system errors for the caller to wrap.
 */
export function punchHole(fd: number, file: string, offset: number, length: number): void {
  const c = load();
  if (c.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) !== 0) {
    const e = c.errno();
    if (e === 95) throw new NotSupportedError(`${file}: the filesystem cannot punch holes (fallocate PUNCH_HOLE: EOPNOTSUPP)`);
    throw errnoError(file, 'fallocate(PUNCH_HOLE)', e);
  }
}

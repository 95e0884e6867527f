import { close, closeSync, fstat, fstatSync, open, openSync, type Stats } from 'node:fs';
import { fsPromises } from './builtins.ts';
import { SyncReadGate, preadFull } from './fd-io.ts';
import { ClosedError, InvalidArgumentError, NotFoundError, ObdError, PermissionError, errnoOf } from './errors.ts';
import type { ByteSource } from './types.ts';
import { readable } from './util.ts';

export interface FileSourceOptions {
  /** 'auto' (default): small reads may be synchronous (see SyncReadGate); 'async': never. */
  reads?: 'auto' | 'async';
}

/**
 * A local file read with positional I/O (pread) on one file descriptor. Opened, checked and
 * closed through the fs API on the fd, not a FileHandle: node:fs/promises is ~2.6 ms of a
 * local command's start-up (src/io/builtins.ts), and every read already goes to the fd. With
 * reads 'auto' that is synchronous too (~10 µs, as small reads are): the thread pool's first
 * use starts its threads, ~3 ms of wall and 1-3 ms of CPU that `obd info` would pay for them.
 */
export class FileSource implements ByteSource {
  readonly name: string;
  readonly size: number;
  #fd: number | undefined;
  readonly #gate: SyncReadGate;
  /** Opened synchronously (reads 'auto'), so closed that way too. */
  readonly #syncOpen: boolean;

  private constructor(name: string, fd: number, size: number, opts: FileSourceOptions) {
    this.name = name;
    this.#fd = fd;
    this.size = size;
    this.#gate = new SyncReadGate(opts.reads !== 'async');
    this.#syncOpen = opts.reads !== 'async';
  }

  static async open(path: string, opts: FileSourceOptions = {}): Promise<FileSource> {
    const sync = opts.reads !== 'async';
    let fd: number;
    try {
      fd = sync ? openSync(path, 'r') : await new Promise<number>((resolve, reject) => open(path, 'r', (e, n) => (e ? reject(e) : resolve(n))));
    } catch (e) {
      throw wrapFsError(path, e);
    }
    try {
      const st = sync ? fstatSync(fd) : await new Promise<Stats>((resolve, reject) => fstat(fd, (e, s) => (e ? reject(e) : resolve(s))));
      if (!st.isFile() && !st.isBlockDevice()) throw new ObdError(`${path}: not a regular file`);
      return new FileSource(path, fd, st.size, opts);
    } catch (e) {
      await closeFd(fd, sync);
      throw e;
    }
  }

  #open(): number {
    if (this.#fd === undefined) throw new ClosedError(this.name);
    return this.#fd;
  }

  tryReadSync(buf: Uint8Array, offset: number): number | undefined {
    const fd = this.#open();
    const view = readable(buf, offset, this.size);
    if (view.length === 0) return 0;
    return this.#gate.read(fd, view, offset);
  }

  /** tryReadSync into buf[at, at + length) without a view (merges and commits from sealed layers). */
  tryReadSyncAt(buf: Uint8Array, at: number, length: number, offset: number): number | undefined {
    const fd = this.#open();
    const n = Math.max(0, Math.min(length, this.size - offset));
    if (n === 0) return 0;
    return this.#gate.readAt(fd, buf, at, n, offset);
  }

  async read(buf: Uint8Array, offset: number): Promise<number> {
    const n = this.tryReadSync(buf, offset);
    if (n !== undefined) return n;
    return preadFull(this.#open(), readable(buf, offset, this.size), offset);
  }

  async close(): Promise<void> {
    const fd = this.#fd;
    this.#fd = undefined;
    if (fd !== undefined) await closeFd(fd, this.#syncOpen);
  }
}

function closeFd(fd: number, sync: boolean): Promise<void> {
  if (sync) return Promise.resolve(closeSync(fd));
  return new Promise((resolve, reject) => close(fd, (e) => (e ? reject(e) : resolve())));
}

/** True when `path` exists and is a regular file. */
export async function isFile(path: string): Promise<boolean> {
  return (await fsPromises().stat(path).catch(() => undefined))?.isFile() ?? false;
}

/** Turns a Node fs error into a typed error that names the path (errnos as errnoOf). */
export function wrapFsError(path: string, e: unknown): Error {
  const code = (e as NodeJS.ErrnoException)?.code;
  if (code === 'ENOENT') return new NotFoundError(`${path}: no such file`, { cause: e });
  if (errnoOf(e) === 'EPERM') return new PermissionError(`${path}: ${code === 'EROFS' ? 'read-only file system' : 'permission denied'}`, { cause: e });
  if (code === 'EISDIR') return new ObdError(`${path}: is a directory`, { cause: e });
  // Any other system error (ENAMETOOLONG, ELOOP, EMFILE, …) is still a typed failure naming the
  // path; programming faults (TypeErrors with ERR_* codes, no syscall) stay what they are.
  const shown = path.length > 200 ? `${path.slice(0, 200)}…` : path;
  if (code === 'ENAMETOOLONG') return new InvalidArgumentError(`${shown}: file name too long`, { cause: e });
  if (typeof (e as NodeJS.ErrnoException)?.syscall === 'string') return new ObdError(`${shown}: ${(e as Error).message}`, { cause: e });
  return e instanceof Error ? e : new ObdError(String(e));
}

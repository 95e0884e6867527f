import { open, stat, type FileHandle } from 'node:fs/promises';
import { SyncReadGate, preadFull } from './fd-io.ts';
import { ClosedError, InvalidArgumentError, NotFoundError, ObdError, PermissionError, errnoOf } from './errors.ts';
import type { ByteSource } from './types.ts';
import { readable } from './util.ts';

export interface FileSourceOptions {
  /** 'auto' (default): small reads may be synchronous (see SyncReadGate); 'async': never. */
  reads?: 'auto' | 'async';
}

/** A local file read with positional I/O (pread) through one file handle. */
export class FileSource implements ByteSource {
  readonly name: string;
  readonly size: number;
  #fh: FileHandle | undefined;
  #fd: number;
  readonly #gate: SyncReadGate;

  private constructor(name: string, fh: FileHandle, size: number, opts: FileSourceOptions) {
    this.name = name;
    this.#fh = fh;
    this.#fd = fh.fd;
    this.size = size;
    this.#gate = new SyncReadGate(opts.reads !== 'async');
  }

  static async open(path: string, opts: FileSourceOptions = {}): Promise<FileSource> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      throw wrapFsError(path, e);
    }
    try {
      const st = await fh.stat();
      if (!st.isFile() && !st.isBlockDevice()) throw new ObdError(`${path}: not a regular file`);
      return new FileSource(path, fh, st.size, opts);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  /** The underlying handle, for callers that need it for the same file (e.g. a writer). */
  get handle(): FileHandle {
    if (!this.#fh) throw new ClosedError(this.name);
    return this.#fh;
  }

  tryReadSync(buf: Uint8Array, offset: number): number | undefined {
    if (!this.#fh) throw new ClosedError(this.name);
    const view = readable(buf, offset, this.size);
    if (view.length === 0) return 0;
    return this.#gate.read(this.#fd, view, offset);
  }

  /** tryReadSync into buf[at, at + length) without a view (merges and commits from sealed layers). */
  tryReadSyncAt(buf: Uint8Array, at: number, length: number, offset: number): number | undefined {
    if (!this.#fh) throw new ClosedError(this.name);
    const n = Math.max(0, Math.min(length, this.size - offset));
    if (n === 0) return 0;
    return this.#gate.readAt(this.#fd, buf, at, n, offset);
  }

  async read(buf: Uint8Array, offset: number): Promise<number> {
    const n = this.tryReadSync(buf, offset);
    if (n !== undefined) return n;
    return preadFull(this.#fd, readable(buf, offset, this.size), offset);
  }

  async close(): Promise<void> {
    const fh = this.#fh;
    this.#fh = undefined;
    await fh?.close();
  }
}

/** True when `path` exists and is a regular file. */
export async function isFile(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isFile() ?? false;
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

import { readSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { preadFull } from './fd-io.ts';
import { ClosedError, NotFoundError, ObdError } from './errors.ts';
import type { ByteSource } from './types.ts';

/** Reads up to this size may be served synchronously (see FileSource). */
const SYNC_MAX = 256 * 1024;
/** A synchronous read slower than this means the data came from the disk, not the page cache. */
const SLOW_SYNC_MS = 0.5;
/** How long a source stays on asynchronous reads after a slow synchronous one. */
const ASYNC_BACKOFF_MS = 2000;

export interface FileSourceOptions {
  /**
   * 'auto' (default): small reads use a synchronous pread, which costs ~1 µs from the page
   * cache where a thread-pool round trip costs ~30 µs; when one takes longer than 0.5 ms
   * (the disk was hit) the source switches to thread-pool reads for 2 s so a cold disk
   * cannot stall the event loop. 'async' always uses the thread pool.
   */
  reads?: 'auto' | 'async';
}

/** A local file read with positional I/O (pread) through one file handle. */
export class FileSource implements ByteSource {
  readonly name: string;
  readonly size: number;
  #fh: FileHandle | undefined;
  #fd: number;
  #syncUntil: number;

  private constructor(name: string, fh: FileHandle, size: number, opts: FileSourceOptions) {
    this.name = name;
    this.#fh = fh;
    this.#fd = fh.fd;
    this.size = size;
    this.#syncUntil = opts.reads === 'async' ? Infinity : 0;
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
    const want = Math.min(buf.length, this.size - offset);
    if (want <= 0) return 0;
    if (want > SYNC_MAX || this.#syncUntil > performance.now()) return undefined;
    const t0 = performance.now();
    let done = 0;
    while (done < want) {
      const n = readSync(this.#fd, buf, done, want - done, offset + done);
      if (n === 0) break;
      done += n;
    }
    const t1 = performance.now();
    if (t1 - t0 > SLOW_SYNC_MS) this.#syncUntil = t1 + ASYNC_BACKOFF_MS;
    return done;
  }

  async read(buf: Uint8Array, offset: number): Promise<number> {
    const n = this.tryReadSync(buf, offset);
    if (n !== undefined) return n;
    const want = Math.min(buf.length, this.size - offset);
    return preadFull(this.#fd, want === buf.length ? buf : buf.subarray(0, want), offset);
  }

  async close(): Promise<void> {
    const fh = this.#fh;
    this.#fh = undefined;
    await fh?.close();
  }
}

/** Turns a Node fs error into a typed error that names the path. */
export function wrapFsError(path: string, e: unknown): Error {
  const err = e as NodeJS.ErrnoException;
  if (err?.code === 'ENOENT') return new NotFoundError(`${path}: no such file`, { cause: e });
  if (err?.code === 'EACCES' || err?.code === 'EPERM') return new ObdError(`${path}: permission denied`, { cause: e });
  if (err?.code === 'EISDIR') return new ObdError(`${path}: is a directory`, { cause: e });
  return e instanceof Error ? e : new ObdError(String(e));
}

import { open, type FileHandle } from 'node:fs/promises';
import { ClosedError } from './errors.ts';
import { pwriteFull, pwriteFullSync } from './fd-io.ts';
import { wrapFsError } from './file.ts';
import type { ByteSink } from './types.ts';

/**
 * Appends to a file through a write-behind buffer so many small writes become few large
 * ones. `writeAt` patches bytes already written (headers, tar size fields).
 */
export class FileSink implements ByteSink {
  readonly name: string;
  #fh: FileHandle | undefined;
  #buf: Buffer;
  #fill = 0;
  #flushed = 0;
  readonly #blocking: boolean;

  private constructor(name: string, fh: FileHandle, bufferSize: number, blocking: boolean) {
    this.name = name;
    this.#fh = fh;
    this.#buf = Buffer.allocUnsafe(bufferSize);
    this.#blocking = blocking;
  }

  /**
   * Creates (or truncates) `path`. `exclusive` refuses to overwrite an existing file.
   * `blocking` writes synchronously, for a worker thread whose file I/O should stay on it
   * rather than queue in the process's shared thread pool.
   */
  static async create(path: string, opts: { exclusive?: boolean; bufferSize?: number; blocking?: boolean } = {}): Promise<FileSink> {
    try {
      const fh = await open(path, opts.exclusive ? 'wx' : 'w');
      return new FileSink(path, fh, opts.bufferSize ?? 1 << 20, opts.blocking ?? false);
    } catch (e) {
      throw wrapFsError(path, e);
    }
  }

  get position(): number {
    return this.#flushed + this.#fill;
  }

  get handle(): FileHandle {
    if (!this.#fh) throw new ClosedError(this.name);
    return this.#fh;
  }

  async write(data: Uint8Array): Promise<void> {
    const fh = this.handle;
    if (data.length >= this.#buf.length) {
      await this.#drain();
      await this.#writeFull(fh, data, this.#flushed);
      this.#flushed += data.length;
      return;
    }
    if (this.#fill + data.length > this.#buf.length) await this.#drain();
    this.#buf.set(data, this.#fill);
    this.#fill += data.length;
  }

  /** Overwrites bytes at an absolute position (must lie inside what was written). */
  async writeAt(data: Uint8Array, pos: number): Promise<void> {
    await this.#drain();
    await this.#writeFull(this.handle, data, pos);
  }

  #writeFull(fh: FileHandle, data: Uint8Array, pos: number): Promise<void> {
    if (!this.#blocking) return writeFull(fh, data, pos);
    pwriteFullSync(fh.fd, data, pos);
    return Promise.resolve();
  }

  async #drain(): Promise<void> {
    if (this.#fill === 0) return;
    await this.#writeFull(this.handle, this.#buf.subarray(0, this.#fill), this.#flushed);
    this.#flushed += this.#fill;
    this.#fill = 0;
  }

  /** Flushes the buffer and fsyncs the file. */
  async sync(): Promise<void> {
    await this.#drain();
    await this.handle.datasync();
  }

  async close(): Promise<void> {
    if (!this.#fh) return;
    try {
      await this.#drain();
    } finally {
      const fh = this.#fh;
      this.#fh = undefined;
      await fh.close();
    }
  }
}

/** Writes all of `data` at `pos` of an open file. */
export function writeFull(fh: FileHandle, data: Uint8Array, pos: number): Promise<void> {
  return pwriteFull(fh.fd, data, pos);
}

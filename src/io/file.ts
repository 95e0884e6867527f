import { open, type FileHandle } from 'node:fs/promises';
import { ClosedError, NotFoundError, ObdError } from './errors.ts';
import type { ByteSource } from './types.ts';

/** A local file read with positional I/O (pread) through one file handle. */
export class FileSource implements ByteSource {
  readonly name: string;
  readonly size: number;
  #fh: FileHandle | undefined;

  private constructor(name: string, fh: FileHandle, size: number) {
    this.name = name;
    this.#fh = fh;
    this.size = size;
  }

  static async open(path: string): Promise<FileSource> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      throw wrapFsError(path, e);
    }
    try {
      const st = await fh.stat();
      if (!st.isFile() && !st.isBlockDevice()) throw new ObdError(`${path}: not a regular file`);
      return new FileSource(path, fh, st.size);
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

  async read(buf: Uint8Array, offset: number): Promise<number> {
    const fh = this.handle;
    const want = Math.min(buf.length, this.size - offset);
    if (want <= 0) return 0;
    let done = 0;
    while (done < want) {
      const { bytesRead } = await fh.read(buf, done, want - done, offset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return done;
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

/**
 * For the applier's ext4 tests: a file-backed device (a sparse file, so e2fsck and fuse2fs
 * read exactly what was written) and a listing of any ApplyTarget through its own
 * readdir/stat (what fuse2fs cannot show: nanosecond mtimes, directory link counts).
 */
import { open, type FileHandle } from 'node:fs/promises';
import type { ApplyTarget } from '../../src/convert/apply.ts';
import { byteKey, printable } from '../../src/convert/bytes.ts';

/** A block device over a (sparse) file: any src/ext4 Ext4Device. */
export class FileDevice {
  readonly name: string;
  readonly size: number;
  readonly #fh: FileHandle;
  private constructor(name: string, size: number, fh: FileHandle) {
    this.name = name;
    this.size = size;
    this.#fh = fh;
  }
  static async create(file: string, size: number): Promise<FileDevice> {
    const fh = await open(file, 'w+');
    await fh.truncate(size);
    return new FileDevice(file, size, fh);
  }
  /** The device over an existing image file, its size the file's. */
  static async reopen(file: string): Promise<FileDevice> {
    const fh = await open(file, 'r+');
    return new FileDevice(file, (await fh.stat()).size, fh);
  }
  async read(buf: Uint8Array, offset: number): Promise<void> {
    for (let done = 0; done < buf.length;) {
      const { bytesRead } = await this.#fh.read(buf, done, buf.length - done, offset + done);
      if (bytesRead === 0) { buf.fill(0, done); return; }
      done += bytesRead;
    }
  }
  async write(buf: Uint8Array, offset: number): Promise<void> {
    for (let done = 0; done < buf.length;) {
      const { bytesWritten } = await this.#fh.write(buf, done, buf.length - done, offset + done);
      done += bytesWritten;
    }
  }
  close(): Promise<void> {
    return this.#fh.close();
  }
}

/** `PATH TYPE MODE UID:GID MTIME LINKS [SIZE]` per path (sizes of non-directories), sorted by path bytes. */
export async function apiListing(fs: ApplyTarget): Promise<string[]> {
  const rows: Array<[string, string]> = [];
  const walk = async (ino: number, path: string): Promise<void> => {
    const st = await fs.stat(ino);
    const mtime = `${st.mtime.sec}.${String(st.mtime.nsec).padStart(9, '0')}`;
    const size = st.type === 'dir' ? '' : ` ${st.size}`;
    rows.push([path, `${st.type} ${st.mode.toString(8).padStart(4, '0')} ${st.uid}:${st.gid} ${mtime} ${st.links}${size}`]);
    if (st.type !== 'dir') return;
    for (const e of await fs.readdir(ino)) await walk(e.ino, path === '' ? byteKey(e.name) : `${path}/${byteKey(e.name)}`);
  };
  await walk(fs.root, '');
  rows.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return rows.map(([p, rest]) => `${p === '' ? '.' : printable(Buffer.from(p, 'latin1'))} ${rest}`);
}

/**
 * Filesystem images for the applier's ext4 tests: a file-backed device (a sparse file, so
 * e2fsck and fuse2fs read exactly what was written), `e2fsck -fn`, and a listing of the image
 * through fuse2fs (read-only; the fuse2fs it starts in the foreground is stopped by unmounting
 * and, failing that, by its pid).
 */
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, open, readFile, rm, type FileHandle } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { ListingRecord } from '../../src/convert/tree-model.ts';
import { listTree } from './tree-listing.ts';

const run = promisify(execFile);

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

/** `e2fsck -fn`: exit code and everything it printed. */
export async function e2fsck(img: string): Promise<{ code: number; output: string }> {
  try {
    const { stdout, stderr } = await run('e2fsck', ['-fn', img]);
    return { code: 0, output: stdout + stderr };
  } catch (e) {
    const x = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof x.code === 'number' ? x.code : -1, output: `${x.stdout ?? ''}${x.stderr ?? ''}` };
  }
}

async function mounted(mnt: string): Promise<boolean> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info.split('\n').some((l) => l.split(' ')[4] === mnt);
}

/** The tree in `img` as fuse2fs shows it (mounted read-only for the listing only). */
export async function fuseListing(img: string): Promise<ListingRecord[]> {
  const mnt = await mkdtemp(path.join(os.tmpdir(), 'obd-mnt-'));
  const child = spawn('fuse2fs', ['-f', '-o', 'ro,fakeroot', img, mnt], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  const exited = once(child, 'exit');
  try {
    for (let i = 0; !(await mounted(mnt)); i++) {
      if (child.exitCode !== null || i > 500) throw new Error(`fuse2fs did not mount ${img}: ${stderr}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    return await listTree(mnt);
  } finally {
    if (await mounted(mnt)) await run('fusermount', ['-u', mnt]).catch(() => child.kill('SIGTERM'));
    else if (child.exitCode === null) child.kill('SIGTERM');
    await exited;
    await rm(mnt, { recursive: true, force: true });
  }
}

/**
 * Test helpers for the ext4 engine: a sparse image file in /dev/shm as an Ext4Device (recording
 * its writes), and the peers that judge what it holds (e2fsck -fn, debugfs).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, open, rm } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Ext4Device } from '../../src/ext4/types.ts';

export class ImageDevice implements Ext4Device {
  readonly name: string;
  readonly size: number;
  readonly #fh: FileHandle;
  /** Every write since the last reset: [offset, length]. */
  writes: [number, number][] = [];
  private constructor(name: string, size: number, fh: FileHandle) {
    this.name = name;
    this.size = size;
    this.#fh = fh;
  }
  static async create(file: string, size: number): Promise<ImageDevice> {
    const fh = await open(file, 'w+');
    await fh.truncate(size);
    return new ImageDevice(file, size, fh);
  }
  static async open(file: string): Promise<ImageDevice> {
    const fh = await open(file, 'r+');
    return new ImageDevice(file, (await fh.stat()).size, fh);
  }
  async read(buf: Uint8Array, offset: number): Promise<void> {
    const { bytesRead } = await this.#fh.read(buf, 0, buf.length, offset);
    if (bytesRead < buf.length) buf.fill(0, bytesRead);
  }
  async write(buf: Uint8Array, offset: number): Promise<void> {
    this.writes.push([offset, buf.length]);
    await this.#fh.write(buf, 0, buf.length, offset);
  }
  close(): Promise<void> {
    return this.#fh.close();
  }
}

/** A directory in /dev/shm (tmpdir if absent) removed when `t` ends. */
export async function shmDir(t: { after(fn: () => unknown): void }): Promise<string> {
  const base = existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();
  const dir = await mkdtemp(path.join(base, 'obd-ext4-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export function run(cmd: string, args: string[], input?: string): { status: number | null; out: string; err: string } {
  const r = spawnSync(cmd, args, { input, maxBuffer: 512 << 20, encoding: 'latin1' });
  if (r.error) throw r.error;
  return { status: r.status, out: r.stdout, err: r.stderr };
}

/** e2fsck -fn must find nothing (exit 0). */
export function assertClean(img: string, step = ''): void {
  const r = run('e2fsck', ['-fn', img]);
  assert.equal(r.status, 0, `e2fsck -fn ${step}: exit ${r.status}\n${r.out}\n${r.err}`);
}

export function debugfs(img: string, ...commands: string[]): string {
  const r = run('debugfs', ['-f', '-', img], commands.join('\n') + '\n');
  assert.equal(r.status, 0, r.err);
  return r.out;
}

export const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

export async function* pieces(...list: [number, Uint8Array][]): AsyncIterable<{ offset: number; bytes: Uint8Array }> {
  for (const [offset, bytes] of list) yield { offset, bytes };
}

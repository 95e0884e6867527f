/**
 * qcow2 images made by qemu-img and qemu-io (the real writers), and the bytes qemu reads
 * from them (`qemu-img convert -O raw`), which every test compares against.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { access, open, readFile } from 'node:fs/promises';
import path from 'node:path';
import { openStack } from '../../src/image/open.ts';
import assert from 'node:assert/strict';
import { obd } from '../helpers/cli.ts';
import { missing, must } from '../nbd/helpers/run.ts';
import { readAll } from '../snapshots/helpers.ts';

export const MiB = 1 << 20;
export const QEMU_TOOLS = ['qemu-img', 'qemu-io', 'qemu-nbd'];
const absent = missing(...QEMU_TOOLS);
/** The `skip` option of a test needing the qemu tools. */
export const SKIP = absent.length ? `peer tools missing: ${absent.join(', ')} (scripts/setup-peers.sh installs them)` : false;

export function qemuImg(...args: string[]): Promise<string> {
  return must('qemu-img', args);
}

/** Runs qemu-io commands on an image (format given, so a raw file is never probed). */
export function qemuIo(file: string, cmds: string[], format = 'qcow2'): Promise<string> {
  return must('qemu-io', ['-f', format, ...cmds.flatMap((c) => ['-c', c]), file]);
}

/** What qemu reads from the image: its raw conversion. */
export async function qemuRaw(file: string, dir: string): Promise<Buffer> {
  const out = path.join(dir, `${path.basename(file)}.qemu.raw`);
  await qemuImg('convert', '-O', 'raw', file, out);
  return readFile(out);
}

/** Sets `bit` in the header byte at `at` (incompatible_features is the u64 at 72: byte 79 holds bits 0–7). */
export async function setHeaderBit(file: string, at: number, bit: number): Promise<void> {
  const fh = await open(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, at);
    b[0]! |= bit;
    await fh.write(b, 0, 1, at);
  } finally {
    await fh.close();
  }
}

/** Runs `obd ARGS --json`, which must succeed, and returns its parsed output. */
export async function obdOk(args: string[]): Promise<any> {
  const r = await obd([...args, '--json']);
  assert.equal(r.code, 0, `obd ${args.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** The flattened bytes of layer files stacked bottom first. */
export async function stackBytes(layers: string[]): Promise<Buffer> {
  const s = await openStack(layers);
  try {
    return Buffer.from(await readAll(s));
  } finally {
    await s.close();
  }
}

/**
 * A 3-image chain of 16 MiB: a zstd base with extended L2 (subclusters of 2 KiB), a zstd
 * middle with extended L2, a zlib top with plain L2 entries. Each has data, compressed and
 * zero clusters; the middle also allocates single subclusters, one of them sharing a 4 KiB
 * block with the base's data.
 */
export async function makeChain(dir: string): Promise<{ base: string; mid: string; top: string }> {
  const base = path.join(dir, 'base.qcow2');
  const mid = path.join(dir, 'mid.qcow2');
  const top = path.join(dir, 'top.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=64k,compression_type=zstd', base, '16M');
  await qemuIo(base, ['write -P 0x11 0 1M', 'write -c -P 0x22 2M 128k', 'write -P 0x33 4M 4k', 'write -z 5M 64k', 'write -P 0x34 6M 64k', 'write -c -P 0x35 7M 64k']);
  await qemuImg('create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', 'base.qcow2', '-o', 'extended_l2=on,compression_type=zstd', mid, '16M');
  await qemuIo(mid, ['write -P 0x44 512k 8k', 'write -P 0x45 530k 2k', 'write -z 0 64k', 'write -c -P 0x55 8M 64k', 'write -z 6M 6k', 'write -P 0 7M 4k']);
  await qemuImg('create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', 'mid.qcow2', top, '16M');
  await qemuIo(top, ['write -P 0x66 2M 4k', 'write -z 4M 64k', 'write -c -P 0x77 12M 64k', 'write -c -P 0x78 2176k 64k', 'write -z 8M 64k']);
  return { base, mid, top };
}

/** A qemu-nbd serving `file` on a unix socket until stop(). */
export function qemuNbd(file: string, sock: string, args: string[] = []): Promise<{ uri: string; stop: () => Promise<void> }> {
  return nbdPeer('qemu-nbd', ['-r', '-t', '-k', sock, ...args, file], sock);
}

/** An NBD server process (qemu-nbd, nbdkit -f) listening on `sock` until stop(). */
export async function nbdPeer(cmd: string, args: string[], sock: string): Promise<{ uri: string; stop: () => Promise<void> }> {
  const child: ChildProcess = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  for (let i = 0; ; i++) {
    if (await access(sock).then(() => true, () => false)) break;
    if (child.exitCode !== null || i > 100) {
      child.kill();
      throw new Error(`${cmd} did not start: ${stderr.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    uri: `nbd+unix:///?socket=${sock}`,
    stop: async () => {
      if (child.exitCode === null) child.kill();
      await exited;
    },
  };
}

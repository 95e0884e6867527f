/**
 * The real kernel path: nbdfuse exposes an NBD export as a file, losetup makes it a block
 * device, mount puts a filesystem on it. Everything set up is recorded in a Teardown and
 * undone in reverse order, even when the test fails.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { missing, must, run, sha256 } from './run.ts';

/** Why kernel tests cannot run here, or false when they can. */
export function kernelSkipReason(): string | false {
  if (process.getuid?.() !== 0) return 'kernel-path tests need root (losetup, mount)';
  if (!existsSync('/dev/fuse')) return 'no /dev/fuse';
  if (!existsSync('/dev/loop-control')) return 'no /dev/loop-control';
  const m = missing('nbdfuse', 'losetup', 'mkfs.ext4', 'mount', 'umount');
  if (m.length) return `missing tools: ${m.join(', ')}`;
  return false;
}

export class Teardown {
  #steps: (() => Promise<unknown>)[] = [];
  add(step: () => Promise<unknown>): void {
    this.#steps.push(step);
  }
  /** Runs every step (last first); failures do not stop the others. */
  async run(): Promise<void> {
    const steps = this.#steps.reverse();
    this.#steps = [];
    for (const s of steps) await s().catch(() => {});
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Unmounts, retrying while the kernel still reports the mount busy. */
export async function umount(target: string): Promise<void> {
  for (let i = 0; ; i++) {
    const r = await run('umount', [target]);
    if (r.code === 0 || /not mounted|no mount point/.test(r.stderr)) return;
    if (i >= 20) throw new Error(`umount ${target}: ${r.stderr.trim()}`);
    await sleep(100);
  }
}

export interface Attached {
  /** The loop device, e.g. /dev/loop3. */
  loop: string;
}

/** nbdfuse + losetup for `uri`; teardown detaches the loop device, unmounts FUSE, stops nbdfuse. */
export async function attach(uri: string, dir: string, td: Teardown, opts: { readOnly?: boolean } = {}): Promise<Attached> {
  const fuseDir = path.join(dir, `fuse-${Math.random().toString(36).slice(2, 8)}`);
  await mkdir(fuseDir);
  const file = path.join(fuseDir, 'disk');
  const child: ChildProcess = spawn('nbdfuse', [...(opts.readOnly ? ['-r'] : []), file, uri], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  td.add(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await Promise.race([exited, sleep(3000)]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  });
  td.add(() => umount(fuseDir));
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`nbdfuse exited ${child.exitCode}: ${stderr.trim()}`);
    if (await stat(file).then((s) => s.size > 0, () => false)) break;
    if (i > 200) throw new Error(`nbdfuse did not expose ${file}: ${stderr.trim()}`);
    await sleep(50);
  }
  const loop = (await must('losetup', ['-f', '--show', ...(opts.readOnly ? ['-r'] : []), file])).trim();
  td.add(async () => {
    for (let i = 0; i < 20; i++) {
      if ((await run('losetup', ['-d', loop])).code === 0) return;
      await sleep(100);
    }
  });
  return { loop };
}

/** Mounts `dev` on a new directory under `dir`; teardown unmounts it. */
export async function mountFs(dev: string, dir: string, td: Teardown, opts: string[] = []): Promise<string> {
  const mnt = path.join(dir, `mnt-${Math.random().toString(36).slice(2, 8)}`);
  await mkdir(mnt);
  await must('mount', [...(opts.length ? ['-o', opts.join(',')] : []), dev, mnt]);
  td.add(() => umount(mnt));
  return mnt;
}

/** sha256 of every regular file under `root`, by relative path (lost+found skipped). */
export async function treeDigest(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (rel: string): Promise<void> => {
    for (const e of await readdir(path.join(root, rel), { withFileTypes: true })) {
      const r = path.join(rel, e.name);
      if (r === 'lost+found') continue;
      if (e.isDirectory()) await walk(r);
      else if (e.isFile()) out.set(r, sha256(await readFile(path.join(root, r))));
    }
  };
  await walk('');
  return out;
}

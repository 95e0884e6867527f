/**
 * CPU time the NBD server process spends per request, this checkout against another one
 * (`--base DIR`, e.g. a worktree of the previous revision), interleaved. On a shared machine
 * wall-clock IOPS move with the neighbours' load; the server's own user+system time per
 * request (from /proc/PID/stat) moves much less, so a before/after comparison of a change to
 * the request path reads this figure. Same layer file, same fio job (4 KiB random reads, a
 * fixed number of requests) for both.
 *
 * Run: node bench/nbd-cpu.ts --base DIR [--rounds N] [--ios N] [--depth N]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { median, sh, table, writeResults } from './util.ts';

const args = process.argv.slice(2);
const opt = (name: string, dflt: string): string => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1]! : dflt;
};
const HERE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BASE = opt('--base', '');
const ROUNDS = Number(opt('--rounds', '5'));
const IOS = Number(opt('--ios', '100000'));
const DEPTHS = opt('--depth', '1,16').split(',').map(Number);
const TICK = 100; // clock ticks per second (getconf CLK_TCK on Linux)

if (!BASE || !existsSync(path.join(BASE, 'src', 'cli', 'main.ts'))) {
  console.error('usage: node bench/nbd-cpu.ts --base DIR (a checkout of the revision to compare with)');
  process.exit(2);
}

function cpuTicks(pid: number): Promise<number> {
  return readFile(`/proc/${pid}/stat`, 'utf8').then((s) => {
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]);
  });
}

async function serve(root: string, layer: string, socket: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [path.join(root, 'src', 'cli', 'main.ts'), 'serve', layer, '--socket', socket, '--json'], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', () => resolve());
    child.once('exit', (c) => reject(new Error(`obd serve (${root}) exited ${c}`)));
  });
  return child;
}

async function measure(root: string, layer: string, dir: string, depth: number): Promise<number> {
  const socket = path.join(dir, 'cpu.sock');
  const child = await serve(root, layer, socket);
  try {
    const before = await cpuTicks(child.pid!);
    await sh('fio', ['--name=c', '--ioengine=nbd', `--uri=nbd+unix:///?socket=${socket}`, '--rw=randread', '--bs=4k', `--iodepth=${depth}`, `--number_ios=${IOS}`, '--size=256m', '--output-format=terse']);
    const after = await cpuTicks(child.pid!);
    return ((after - before) / TICK / IOS) * 1e6;
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
}

const dir = await mkdtemp(path.join(existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'obd-nbd-cpu-'));
try {
  const raw = path.join(dir, 'disk.raw');
  await writeFile(raw, randomBytes(256 << 20));
  const layer = path.join(dir, 'disk.lsmt');
  await sh(process.execPath, [path.join(HERE, 'src', 'cli', 'main.ts'), 'import', raw, layer]);
  const rows: string[][] = [];
  for (const depth of DEPTHS) {
    const ours: number[] = [];
    const base: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      ours.push(await measure(HERE, layer, dir, depth));
      base.push(await measure(BASE, layer, dir, depth));
    }
    const ratios = ours.map((o, i) => o / base[i]!);
    rows.push([`qd${depth}`, median(base).toFixed(2), median(ours).toFixed(2), `${median(ratios).toFixed(3)}×`, `${Math.min(...ratios).toFixed(3)}–${Math.max(...ratios).toFixed(3)}`]);
  }
  await writeResults(
    'nbd-cpu',
    `## NBD server CPU per request\n\nServer CPU (user + system) per 4 KiB random read, \`obd serve\` of a 256 MiB one-layer stack on tmpfs, fio nbd engine, ${IOS} requests a run, ${ROUNDS} interleaved rounds; base = ${BASE}.\n\n` +
      table(['depth', 'base µs/req', 'this µs/req', 'this ÷ base (median)', 'range'], rows),
  );
} finally {
  await rm(dir, { recursive: true, force: true });
}

/**
 * Compaction and diff benchmarks (issue 15):
 *  1. Compaction of a writable layer whose data file is 80 % dead (128 MiB live in 4 KiB
 *     blocks over a 1 GiB disk, each block written 5 times in random order): MiB/s of live
 *     data rewritten, offline (WritableLayer.compact, `obd compact`) side by side with the
 *     reference's offline rewrite of the same live data (`overlaybd-commit` into a new layer)
 *     and `obd commit`; space reclaimed; then online: 4 KiB random read+write latency at one
 *     request in flight while a compaction runs, against the same loop without one.
 *  2. `obd diff` of two 4 GiB disks (1 GiB of data each in 4 KiB blocks) differing in 1 % of
 *     their blocks, when B is A plus a layer and when B is a separate flattened layer, vs
 *     exporting both (`obd export`) and comparing the raw files with `cmp`.
 *
 * Files live on tmpfs (docs/benchmarking.md §1); the process is pinned to one CPU with the
 * peers it runs (§2). Run: node bench/compact.ts [--quick] [--only compact|diff]
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { WritableLayer } from '../src/lsmt/writable.ts';
import { commitLayer } from '../src/lsmt/commit.ts';
import { Rng, median, table, writeResults } from './util.ts';

const quick = process.argv.includes('--quick');
const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : undefined;
const CPU = process.env.OBD_BENCH_CPU ?? '1';
const REF = process.env.OBD_REF_BIN ?? '/opt/obdref/bin';

if (!process.env.OBD_BENCH_PINNED) {
  const r = spawnSync('taskset', ['-c', CPU, process.execPath, ...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    stdio: 'inherit',
    env: { ...process.env, OBD_BENCH_PINNED: '1' },
  });
  process.exit(r.status ?? 1);
}

const ROOT = path.dirname(fileURLToPath(import.meta.url));
const MAIN = path.join(ROOT, '..', 'src', 'cli', 'obd.js');
const DIR = `/dev/shm/obd-bench-compact-${process.pid}`;
const GiB = 1 << 30;
const MiB = 1 << 20;
const BLOCK = 4096;
const f = (name: string) => path.join(DIR, name);
const ms = (x: number) => `${x.toFixed(x < 10 ? 2 : 0)} ms`;

function timeCommand(cmd: string, args: string[]): number {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], maxBuffer: 1 << 26 });
  const t = performance.now() - t0;
  if (r.status !== 0 && !(cmd === 'cmp' && r.status === 1)) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return t;
}

/** 80 % dead: `live` bytes of 4 KiB blocks over a 1 GiB disk, each written `times` times, shuffled. */
async function buildDeadUpper(data: string, index: string, live: number, times: number): Promise<void> {
  const rng = new Rng(15);
  const blocks = live / BLOCK;
  const slots = new Set<number>();
  while (slots.size < blocks) slots.add(rng.int(GiB / BLOCK));
  const at = [...slots];
  const order: number[] = [];
  for (let t = 0; t < times; t++) for (let i = 0; i < blocks; i++) order.push(i);
  for (let i = order.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const payload = randomBytes(8 * MiB);
  const w = await WritableLayer.create(data, index, { virtualSize: GiB, overwrite: true });
  for (let k = 0; k < order.length; k++) {
    const p = (k * BLOCK) % payload.length;
    await w.write(payload.subarray(p, p + BLOCK), at[order[k]!]! * BLOCK);
  }
  await w.close();
}

/** Latency of 4 KiB random reads and writes (alternating, one in flight) for `durationMs` or until `until` settles. */
async function ioLoop(w: WritableLayer, until: Promise<unknown> | number): Promise<number[]> {
  const rng = new Rng(99);
  const buf = randomBytes(BLOCK);
  const lat: number[] = [];
  let done = false;
  if (typeof until === 'number') setTimeout(() => (done = true), until);
  else void until.finally(() => (done = true));
  for (let i = 0; !done; i++) {
    const off = rng.int(GiB / BLOCK) * BLOCK;
    const t0 = performance.now();
    if (i & 1) await w.write(buf, off);
    else await w.read(buf, off);
    if (i % 64 === 63) await w.flush();
    lat.push(performance.now() - t0);
  }
  return lat;
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((s.length * p) / 100))]!;
};

async function compactBench(): Promise<string> {
  const live = (quick ? 32 : 128) * MiB;
  const runs = quick ? 1 : 3;
  await buildDeadUpper(f('src.data'), f('src.index'), live, 5);
  const before = (await stat(f('src.data'))).size;
  const fresh = async () => {
    await copyFile(f('src.data'), f('rw.data'));
    await copyFile(f('src.index'), f('rw.index'));
  };
  const lib: number[] = [];
  const cli: number[] = [];
  const ours: number[] = [];
  const ref: number[] = [];
  let after = 0;
  let holdMs: number[] = [];
  const haveRef = existsSync(path.join(REF, 'overlaybd-commit'));
  for (let r = 0; r < runs; r++) {
    await fresh();
    const w = await WritableLayer.open(f('rw.data'), f('rw.index'));
    const t0 = performance.now();
    const res = await w.compact();
    lib.push(performance.now() - t0);
    holdMs.push(res.holdMs);
    after = res.dataBytesAfter;
    await w.close();
    await fresh();
    cli.push(timeCommand(process.execPath, [MAIN, 'compact', f('rw.data'), f('rw.index')]));
    await rm(f('out.lsmt'), { force: true });
    const t1 = performance.now();
    await commitLayer(f('src.data'), f('src.index'), f('out.lsmt'));
    ours.push(performance.now() - t1);
    if (haveRef) {
      await rm(f('ref.lsmt'), { force: true });
      ref.push(timeCommand(path.join(REF, 'overlaybd-commit'), [f('src.data'), f('src.index'), f('ref.lsmt')]));
    }
  }
  // Online: the same compaction while a client does 4 KiB random I/O, against the client alone.
  await fresh();
  const w = await WritableLayer.open(f('rw.data'), f('rw.index'));
  const alone = await ioLoop(w, quick ? 1000 : 3000);
  const t0 = performance.now();
  const c = w.compact();
  const during = await ioLoop(w, c);
  const online = await c;
  const onlineMs = performance.now() - t0;
  await w.close();
  holdMs = [...holdMs, online.holdMs];
  const rate = (t: number) => `${(live / MiB / (t / 1000)).toFixed(0)} MiB/s`;
  const rows = [
    ['WritableLayer.compact() (offline, in-process)', ms(median(lib)), rate(median(lib)), '1.00×'],
    ['`obd compact DATA INDEX` (whole command)', ms(median(cli)), rate(median(cli)), `${(median(lib) / median(cli)).toFixed(2)}×`],
    ['`obd commit` of the same pair, in-process (a sealed layer, not a swap)', ms(median(ours)), rate(median(ours)), `${(median(lib) / median(ours)).toFixed(2)}×`],
    haveRef
      ? ['reference `overlaybd-commit` of the same pair (whole command)', ms(median(ref)), rate(median(ref)), `${(median(lib) / median(ref)).toFixed(2)}×`]
      : ['reference `overlaybd-commit`', 'not measured (no /opt/obdref/bin)', '', ''],
    ['WritableLayer.compact() online, under the I/O loop below', ms(onlineMs), rate(onlineMs), `${(median(lib) / onlineMs).toFixed(2)}×`],
  ];
  const lat = (xs: number[]) => [String(xs.length), `${(xs.length / (xs.reduce((a, b) => a + b, 0) / 1000)).toFixed(0)}`, ms(pct(xs, 50)), ms(pct(xs, 99)), ms(xs.reduce((a, b) => Math.max(a, b), 0))];
  return [
    `### Compaction of an upper whose data file is 80 % dead (${live / MiB} MiB live in 4 KiB blocks over 1 GiB, each written 5 times), tmpfs, median of ${runs}`,
    '',
    `Data file ${(before / MiB).toFixed(0)} MiB → ${(after / MiB).toFixed(0)} MiB: ${((before - after) / MiB).toFixed(0)} MiB reclaimed (${((100 * (before - after)) / before).toFixed(1)} %). Writes held at the swap: ${holdMs.map((h) => ms(h)).join(', ')} (offline runs, then the online one).`,
    '',
    table(['rewrite of the live data', 'time', 'live data rate', 'speed vs compact()'], rows),
    '',
    'Client I/O during the online compaction (4 KiB at random over the 1 GiB disk, reads and writes alternating, one in flight, a flush every 64; same process and CPU):',
    '',
    table(['', 'requests', 'IOPS', 'p50', 'p99', 'max'], [
      ['no compaction', ...lat(alone)],
      ['during compaction', ...lat(during)],
    ]),
  ].join('\n');
}

/** A 4 GiB disk with 1 GiB of data in random 4 KiB blocks (A), and 1 % of the disk's blocks rewritten on top (B). */
async function diffBench(): Promise<string> {
  const disk = (quick ? 1 : 4) * GiB;
  const blocks = disk / BLOCK;
  const payload = randomBytes(8 * MiB);
  const fill = async (data: string, index: string, n: number, seed: number) => {
    const w = await WritableLayer.create(data, index, { virtualSize: disk, overwrite: true });
    const r = new Rng(seed);
    for (let k = 0; k < n; k++) {
      const p = ((k * 7919 + seed) * BLOCK) % payload.length;
      await w.write(payload.subarray(p, p + BLOCK), r.int(blocks) * BLOCK);
    }
    await w.close();
  };
  await fill(f('a.data'), f('a.index'), blocks / 4, 1);
  await commitLayer(f('a.data'), f('a.index'), f('a.lsmt'), { uuid: 'a0a0a0a0-0000-4000-8000-0000000000a0' });
  await rm(f('a.data'));
  await fill(f('b.data'), f('b.index'), Math.round(blocks / 100), 2);
  await commitLayer(f('b.data'), f('b.index'), f('top.lsmt'), { uuid: 'b0b0b0b0-0000-4000-8000-0000000000b0', parentUuid: 'a0a0a0a0-0000-4000-8000-0000000000a0' });
  await rm(f('b.data'));
  // B as one flattened layer: same disk, no layer in common with A.
  timeCommand(process.execPath, [MAIN, 'merge', f('a.lsmt'), f('top.lsmt'), f('b.lsmt')]);
  const runs = quick ? 1 : 3;
  const t = { layers: [] as number[], compare: [] as number[], export: [] as number[], cmp: [] as number[], cmpl: [] as number[] };
  for (let r = 0; r < runs; r++) {
    for (const n of ['d1.lsmt', 'd2.lsmt', 'a.raw', 'b.raw']) await rm(f(n), { force: true });
    t.layers.push(timeCommand(process.execPath, [MAIN, 'diff', '--from', f('a.lsmt'), '--to', `${f('a.lsmt')},${f('top.lsmt')}`, f('d1.lsmt')]));
    t.compare.push(timeCommand(process.execPath, [MAIN, 'diff', '--from', f('a.lsmt'), '--to', f('b.lsmt'), '--no-verify-chain', f('d2.lsmt')]));
    t.export.push(timeCommand(process.execPath, [MAIN, 'export', f('a.lsmt'), f('a.raw')]) + timeCommand(process.execPath, [MAIN, 'export', f('b.lsmt'), f('b.raw')]));
    t.cmp.push(timeCommand('cmp', ['-s', f('a.raw'), f('b.raw')]));
    // GNU cmp stops at the first difference when its output is /dev/null, so count the lines.
    t.cmpl.push(timeCommand('sh', ['-c', `cmp -l ${f('a.raw')} ${f('b.raw')} | wc -l > /dev/null`]));
  }
  const exportCmpl = median(t.export) + median(t.cmpl);
  const row = (name: string, x: number) => [name, ms(x), `${(exportCmpl / x).toFixed(1)}×`];
  return [
    `### \`obd diff\` of two ${disk / GiB} GiB disks (${disk / GiB / 4} GiB of data each in 4 KiB blocks) differing in 1 % of their blocks, tmpfs, median of ${runs}`,
    '',
    table(['', 'time', 'speed vs export both + cmp -l'], [
      row('`obd diff`, B = A + a layer (the layer merged)', median(t.layers)),
      row('`obd diff`, B a separate flattened layer (compared where either maps data)', median(t.compare)),
      row('`obd export` A and B (sparse raw files)', median(t.export)),
      row('  + `cmp -s` (stops at the first difference: finds *that* they differ)', median(t.export) + median(t.cmp)),
      row('  + `cmp -l \\| wc -l` (lists every differing byte: finds *where*)', exportCmpl),
    ]),
    '',
    'Only the diff gives a layer; cmp only says where the raw bytes differ. Whole commands (Node start-up included).',
  ].join('\n');
}

await rm(DIR, { recursive: true, force: true });
await mkdir(DIR, { recursive: true });
try {
  const parts: string[] = [];
  if (!only || only === 'compact') {
    parts.push(await compactBench());
    process.stderr.write(parts.at(-1) + '\n');
  }
  if (!only || only === 'diff') {
    await rm(DIR, { recursive: true, force: true });
    await mkdir(DIR, { recursive: true });
    parts.push(await diffBench());
  }
  const md = [`## Compaction and diff (bench/compact.ts)`, '', ...parts.flatMap((p) => [p, ''])].join('\n');
  if (only) process.stdout.write(md + '\n');
  else await writeResults('compact', md);
} finally {
  await rm(DIR, { recursive: true, force: true });
}

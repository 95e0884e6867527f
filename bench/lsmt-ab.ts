/**
 * The LSMT read path of two source trees side by side in one process: each tree's own
 * `openStack` and merged-index lookup over the same layer files, read at the same offsets,
 * alternated A B B A per round so drift and the machine's other load hit both alike
 * (docs/benchmarking.md §3). For "did this change make reads slower?": separate processes
 * of bench/lsmt.ts on a shared machine swing more than the differences looked for. Each case
 * is timed by the process's CPU time (getrusage: every thread, so thread-pool reads count)
 * as well as by the wall clock: on a loaded machine the wall clock mostly measures the wait
 * for a CPU, the CPU time what the reads cost.
 *
 *   node bench/lsmt-ab.ts BEFORE_TREE AFTER_TREE [--rounds 10] [--reads 100000] [--layers 1,16,256]
 *
 * Each tree is a checkout of this repository (a git worktree) with node_modules. Layers as in
 * bench/lsmt.ts (1000 random 4 KiB extents per layer over a 1 GiB disk, seed 42), written by
 * the after tree's writer on tmpfs; the process is pinned to one CPU.
 */
import { spawnSync } from 'node:child_process';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Rng, median, table } from './util.ts';

const args = process.argv.slice(2);
const opt = (name: string, dflt: number): number => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const trees = args.filter((a, i) => !a.startsWith('--') && !args[i - 1]?.startsWith('--'));
if (trees.length !== 2) throw new Error('usage: node bench/lsmt-ab.ts BEFORE_TREE AFTER_TREE [--rounds N] [--reads N] [--layers 1,16,256]');
const ROUNDS = opt('--rounds', 10);
const Q = opt('--reads', 100_000);

if (!process.env.OBD_BENCH_PINNED) {
  const r = spawnSync('taskset', ['-c', '1', process.execPath, fileURLToPath(import.meta.url), ...args], { stdio: 'inherit', env: { ...process.env, OBD_BENCH_PINNED: '1' } });
  process.exit(r.status ?? 1);
}

interface StackLike {
  read(buf: Uint8Array, offset: number): Promise<void>;
  close(): Promise<void>;
  index: { count: number; offset: ArrayLike<number>; length: ArrayLike<number>; zeroed: ArrayLike<number> };
}
interface Tree {
  name: string;
  openStack(paths: string[]): Promise<StackLike>;
  IndexLookup: new (t: unknown) => { firstEndingAfter(sector: number): number };
  MappingTable: new (n: number) => { push(o: number, l: number, m: number, z: boolean, tag: number): void };
}

async function load(dir: string, name: string): Promise<Tree> {
  const root = path.resolve(dir);
  const [open, lookup, tbl] = await Promise.all([import(path.join(root, 'src/image/open.ts')), import(path.join(root, 'src/lsmt/lookup.ts')), import(path.join(root, 'src/lsmt/table.ts'))]);
  return { name, openStack: open.openStack, IndexLookup: lookup.IndexLookup, MappingTable: tbl.MappingTable };
}

const [A, B] = [await load(trees[0]!, 'before'), await load(trees[1]!, 'after')];
const { writeSealedLayer } = await import(path.join(path.resolve(trees[1]!), 'src/lsmt/writer.ts'));

const DISK = 1 << 30;
const BLOCK = 4096;
const Ns = args.includes('--layers') ? args[args.indexOf('--layers') + 1]!.split(',').map(Number) : [1, 16, 256];
const dir = '/dev/shm/obd-bench-lsmt-ab';

/** The layers of bench/lsmt.ts: same seed, same extents. */
async function buildLayers(n: number): Promise<{ files: string[]; base: number[] }> {
  const rng = new Rng(42);
  const files: string[] = [];
  let base: number[] = [];
  const data = new Uint8Array(BLOCK);
  for (let L = 0; L < n; L++) {
    const taken = new Set<number>();
    const exts: Array<{ offset: number; data: Uint8Array }> = [];
    while (exts.length < 1000) {
      const blk = rng.int(DISK / BLOCK);
      if (taken.has(blk)) continue;
      taken.add(blk);
      for (let i = 0; i < BLOCK; i += 4) data[i] = rng.int(256);
      exts.push({ offset: blk * BLOCK, data: data.slice() });
    }
    const f = path.join(dir, `layer${String(L).padStart(3, '0')}.lsmt`);
    await writeSealedLayer(f, { virtualSize: DISK }, exts);
    files.push(f);
    if (L === 0) base = exts.map((e) => e.offset);
  }
  return { files, base };
}

function pick(blocks: readonly number[], seed: number, q: number): Float64Array {
  const r = new Rng(seed);
  const out = new Float64Array(q);
  for (let i = 0; i < q; i++) out[i] = blocks[r.int(blocks.length)]!;
  return out;
}

function mappedBlocks(st: StackLike): number[] {
  const blocks: number[] = [];
  for (let i = 0; i < st.index.count; i++) {
    if (st.index.zeroed[i]) continue;
    const end = (st.index.offset[i]! + st.index.length[i]!) * 512;
    for (let b = st.index.offset[i]! * 512; b + BLOCK <= end; b += BLOCK) blocks.push(b);
  }
  return blocks;
}

/** Operations per second of wall time and per second of the process's CPU time. */
interface Rate {
  wall: number;
  cpu: number;
}

async function timed(n: number, work: () => Promise<void> | void): Promise<Rate> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await work();
  const wall = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  return { wall: n / wall, cpu: n / ((c.user + c.system) / 1e6) };
}

function iops(st: StackLike, offs: Float64Array): Promise<Rate> {
  const buf = new Uint8Array(BLOCK);
  return timed(offs.length, async () => {
    for (let i = 0; i < offs.length; i++) await st.read(buf, offs[i]!);
  });
}

/** Runs `a` and `b` alternately (A B, then B A) and returns each one's samples. */
async function alternate(rounds: number, a: () => Promise<Rate>, b: () => Promise<Rate>): Promise<{ a: Rate[]; b: Rate[] }> {
  const out = { a: [] as Rate[], b: [] as Rate[] };
  for (let r = 0; r < rounds; r++) {
    if (r % 2 === 0) {
      out.a.push(await a());
      out.b.push(await b());
    } else {
      out.b.push(await b());
      out.a.push(await a());
    }
  }
  return out;
}

/** Median of the per-round ratios b/a of one measure, and its range. */
function ratio(s: { a: Rate[]; b: Rate[] }, k: keyof Rate): string {
  const r = s.a.map((x, i) => s.b[i]![k] / x[k]).sort((x, y) => x - y);
  return `${median(r).toFixed(3)}× (${r[0]!.toFixed(2)}–${r.at(-1)!.toFixed(2)})`;
}

/** One table row: medians of both trees by CPU time, the ratio by CPU time and by wall time. */
function row(what: string, s: { a: Rate[]; b: Rate[] }, scale = 1, unit = ''): string[] {
  const m = (xs: Rate[]) => (median(xs.map((x) => x.cpu)) / scale).toFixed(scale === 1 ? 0 : 1) + unit;
  return [what, m(s.a), m(s.b), ratio(s, 'cpu'), ratio(s, 'wall')];
}

await rm(dir, { recursive: true, force: true });
await mkdir(dir, { recursive: true });
try {
  const rows: string[][] = [];
  const started = new Date().toISOString().slice(11, 16);
  const load0 = (await import('node:os')).loadavg().map((x) => x.toFixed(1)).join(' ');

  // Merged-index lookups at 1M segments, each tree's own IndexLookup over its own table.
  const rng = new Rng(1_000_000);
  const segs: Array<[number, number]> = [];
  let pos = 0;
  for (let i = 0; i < 1_000_000; i++) {
    pos += rng.int(16);
    const len = 1 + rng.int(16);
    segs.push([pos, len]);
    pos += len;
  }
  const lookups = [A, B].map((t) => {
    const tbl = new t.MappingTable(segs.length);
    for (const [o, l] of segs) tbl.push(o, l, 8, false, 0);
    return new t.IndexLookup(tbl);
  });
  const qs = new Float64Array(2_000_000);
  for (let i = 0; i < qs.length; i++) qs[i] = rng.int(pos);
  const time = (lk: { firstEndingAfter(s: number): number }) =>
    timed(qs.length, () => {
      let check = 0;
      for (let i = 0; i < qs.length; i++) check += lk.firstEndingAfter(qs[i]!);
      if (check < 0) throw new Error('negative lookup');
    });
  const lk = await alternate(ROUNDS, () => time(lookups[0]!), () => time(lookups[1]!));
  rows.push(row('lookups, 1M segments', lk, 1e6, ' M/s'));

  const { files, base } = await buildLayers(Ns.at(-1)!);
  const every = Array.from({ length: DISK / BLOCK }, (_, i) => i * BLOCK);
  for (const n of Ns) {
    const sa = await A.openStack(files.slice(0, n));
    const sb = await B.openStack(files.slice(0, n));
    const sets: Record<string, Float64Array> = { base: pick(base, 3, Q), mapped: pick(mappedBlocks(sb), 1, Q), uniform: pick(every, 2, Q) };
    for (const [set, offs] of Object.entries(sets)) {
      await iops(sa, offs.subarray(0, 10_000));
      await iops(sb, offs.subarray(0, 10_000));
      const s = await alternate(ROUNDS, () => iops(sa, offs), () => iops(sb, offs));
      rows.push(row(`${set} reads, N=${n}`, s));
    }
    await sa.close();
    await sb.close();
  }
  process.stdout.write(
    `Started ${started} UTC, load average ${load0}; ${ROUNDS} rounds alternated A B / B A, ${Q.toLocaleString('en')} random 4 KiB reads per case and round (one in flight), pinned to CPU 1, layers on tmpfs; medians of reads per CPU-second; ratios are medians of the per-round ratios (range), above 1 = after is faster.\n\n` +
      table(['measure (per CPU-second)', `before (${trees[0]})`, `after (${trees[1]})`, 'after / before, CPU time', 'after / before, wall clock'], rows) +
      '\n',
  );
} finally {
  await rm(dir, { recursive: true, force: true });
}

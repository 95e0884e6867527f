/**
 * `obd` side by side with the reference C++ tools (built from ../shared/refbuild into
 * $OBD_REF_BIN, default /opt/obdref/bin), same inputs on tmpfs, in one run: start-up, commit,
 * commit -z, zfile compress / decompress, and export of a zfile layer vs `obdref cat`.
 * Contenders alternate run by run (A B A B …) and the ratios are medians of the per-pair
 * ratios, so load from other processes on the machine hits both alike. Without the reference
 * tools the rows say so and quote no figure.
 *
 * With --pin, single-threaded contenders run pinned to one CPU (`taskset -c 0`, both sides
 * alike; the `-j 2` rows unpinned): fair on an idle machine, but on a loaded one every pinned
 * process queues behind whatever else runs on CPU 0, and obd's reads, writes and GC threads
 * can no longer overlap its main thread, so it is off by default. Commits are made with the
 * null uuid on both sides (the reference's default), so their outputs compare byte for byte.
 *
 *   node bench/reference.ts [--runs N] [--size-mib N] [--pin] [--only startup,commit,zfile,export] [--baseline CHECKOUT]
 *                                                          (writes bench/results/reference.md)
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { exportRaw } from '../src/image/export.ts';
import { openStack } from '../src/image/open.ts';
import { commitLayer } from '../src/lsmt/commit.ts';
import { importRaw } from '../src/lsmt/import.ts';
import { WritableLayer } from '../src/lsmt/writable.ts';
import { compressFile, decompressFile } from '../src/zfile/writer.ts';
import { zinput8m } from '../test/helpers/recipes.ts';
import { median, obdCommand, Rng, run, table, writeResults, type Timing } from './util.ts';

const args = process.argv.slice(2);
const argNum = (name: string, dflt: number) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const RUNS = argNum('--runs', 7);
const SIZE_MIB = argNum('--size-mib', 256);
const PIN = args.includes('--pin') && existsSync('/usr/bin/taskset');
const ONLY = args.includes('--only') ? args[args.indexOf('--only') + 1]!.split(',') : undefined;
/** Another checkout (e.g. `git worktree add /tmp/before main`) whose start-up runs interleaved with this one's. */
const BASELINE = args.includes('--baseline') ? path.resolve(args[args.indexOf('--baseline') + 1]!) : undefined;
const REF = process.env.OBD_REF_BIN ?? '/opt/obdref/bin';
const haveRef = existsSync(path.join(REF, 'overlaybd-zfile')) && existsSync(path.join(REF, 'overlaybd-commit')) && existsSync(path.join(REF, 'obdref'));
const OBD = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli', 'obd.js');
const DIR = `/dev/shm/obd-bench-reference-${process.pid}`;
const f = (name: string) => path.join(DIR, name);
const NO_REF = 'reference not present: not measured';

/**
 * CPU time (ms) of a process, all threads, from `perf stat` (task-clock, µs resolution):
 * on a loaded machine the wall time of a 10 ms start-up is mostly waiting for a CPU.
 * Undefined without perf.
 */
function cpuOf(cmd: string, argv: string[]): number | undefined {
  if (!existsSync('/usr/bin/perf')) return undefined;
  const r = spawnSync('/usr/bin/perf', ['stat', '-x,', '-e', 'task-clock', cmd, ...argv], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  const m = /([\d.]+),msec,task-clock/.exec(r.stderr);
  return r.status === 0 && m ? Number(m[1]) : undefined;
}

type Cmd = [string, string[]];
const pinned = (cmd: string, argv: string[]): Cmd => (PIN ? ['/usr/bin/taskset', ['-c', '0', cmd, ...argv]] : [cmd, argv]);
/** obd on one CPU, run as users run it (obdCommand: with the launcher's shebang Node options); `-j 2` runs go unpinned (obdMt). */
const obd = (...a: string[]): Cmd => pinned(...obdCommand(OBD, a));
const obdMt = (...a: string[]): Cmd => obdCommand(OBD, a);
const ref = (tool: string, ...a: string[]): Cmd => pinned(path.join(REF, tool), a);
const NULL_UUID = ['--uuid', '00000000-0000-0000-0000-000000000000'];

/**
 * Contenders run alternately, `RUNS` times each after one warm-up; `outs[i]`, contender i's
 * output, is removed before each of its runs (untimed) and left by the last one.
 */
function sideBySide(contenders: Cmd[], outs: string[] = []): Timing[][] {
  const out: Timing[][] = contenders.map(() => []);
  for (let r = -1; r < RUNS; r++) {
    contenders.forEach(([cmd, argv], i) => {
      if (outs[i]) spawnSync('rm', ['-f', outs[i]]);
      const t = run(cmd, argv);
      if (r >= 0) out[i]!.push(t);
    });
  }
  return out;
}

const ms = (xs: Timing[], k: keyof Timing = 'wall') => median(xs.map((t) => t[k]));
const fmt = (v: number) => (v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${v.toFixed(0)} ms`);
/** Median of per-pair ratios a[i] / b[i]. */
const ratio = (a: Timing[], b: Timing[], k: keyof Timing = 'wall') => median(a.map((t, i) => t[k] / b[i]![k]));
const x = (v: number) => `${v.toFixed(2)}×`;

function same(a: string, b: string): string {
  const r = spawnSync('cmp', ['-s', a, b]);
  return r.status === 0 ? 'identical' : 'differ';
}

/** Time of an in-process call: median of RUNS after a warm-up. */
async function lib(fn: () => Promise<unknown>): Promise<number> {
  const ts: number[] = [];
  for (let r = -1; r < RUNS; r++) {
    const t0 = performance.now();
    await fn();
    if (r >= 0) ts.push(performance.now() - t0);
  }
  return median(ts);
}

async function inputs(): Promise<void> {
  await mkdir(DIR, { recursive: true });
  const z = zinput8m();
  const raw = Buffer.alloc(SIZE_MIB << 20);
  for (let at = 0; at < raw.length; at += z.length) z.copy(raw, at);
  await writeFile(f('disk.raw'), raw);
  await importRaw(f('disk.raw'), f('layer.lsmt'));
  // The writable layer of the issue: 16384 random 4 KiB writes of random data over 1 GiB.
  const w = await WritableLayer.create(f('rw.data'), f('rw.index'), { virtualSize: 1 << 30 });
  const rng = new Rng(16384);
  const payload = randomBytes(16384 * 4096);
  for (let i = 0; i < 16384; i++) await w.write(payload.subarray(i * 4096, (i + 1) * 4096), rng.int((1 << 30) / 4096) * 4096);
  await w.close();
}

async function startup(): Promise<string> {
  // A small zfile layer for `obd export`: start-up, not throughput, is what that row measures.
  await writeFile(f('small.raw'), zinput8m().subarray(0, 4 << 20));
  await importRaw(f('small.raw'), f('small.lsmt'));
  await compressFile(f('small.lsmt'), f('small.zfile'), { algorithm: 'lz4', blockSize: 4096 });
  const lsmt = f('layer.lsmt');
  const local = (launcher: string, tag: string) => [
    ['`obd --help` (loads every command)', [launcher, '--help']],
    ['`obd info LAYER` (a local command)', [launcher, 'info', lsmt]],
    ['`obd export` of a 4 MiB zfile layer', [launcher, 'export', f('small.zfile'), f(`small-${tag}.raw`), '--force']],
    ['`obd serve --help` (the serve command loaded)', [launcher, 'serve', '--help']],
  ] as const;
  const ours = local(OBD, 'obd');
  const base = BASELINE ? local(path.join(BASELINE, 'src', 'cli', 'obd.js'), 'base') : [];
  const nodeAlone = pinned(process.execPath, ['-e', '0']);
  const cmds: Cmd[] = [
    ...ours.map(([, [launcher, ...a]]) => pinned(...obdCommand(launcher, a))),
    ...base.map(([, [launcher, ...a]]) => pinned(...obdCommand(launcher, a))),
    nodeAlone,
    ...(haveRef ? [ref('overlaybd-zfile', '--help')] : []),
  ];
  const walls = sideBySide(cmds);
  // The same commands again for their CPU time, alternating as well.
  const cpus: number[][] = cmds.map(() => []);
  for (let r = 0; r < RUNS; r++) cmds.forEach(([c, a], i) => cpus[i]!.push(cpuOf(c, a) ?? NaN));
  const cpu = (i: number) => (Number.isNaN(median(cpus[i]!)) ? 'no perf' : `${median(cpus[i]!).toFixed(1)} ms`);
  const best = (xs: Timing[]) => fmt(Math.min(...xs.map((t) => t.wall)));
  const nodeAt = ours.length + base.length;
  const node = walls[nodeAt]!;
  const refZ = haveRef ? walls[nodeAt + 1]! : undefined;
  const rows = ours.map(([label], i) => [
    label,
    fmt(ms(walls[i]!)),
    best(walls[i]!),
    cpu(i),
    ...(BASELINE ? [cpu(ours.length + i)] : []),
    refZ ? fmt(ms(refZ)) : NO_REF,
    refZ ? x(ratio(walls[i]!, refZ)) : '',
    x(ratio(walls[i]!, node)),
  ]);
  const blank = BASELINE ? [''] : [];
  rows.push(['(`node -e 0`: the runtime alone)', fmt(ms(node)), best(node), cpu(nodeAt), ...blank, '', '', '']);
  if (refZ) rows.push(['(`overlaybd-zfile --help`)', fmt(ms(refZ)), best(refZ), cpu(nodeAt + 1), ...blank, '', '', '']);
  return [
    '### Start-up',
    `Whole processes, wall time, medians of ${RUNS} alternating runs (and the best run, the closest to an idle machine), warm caches (each command runs once untimed first). Reference: \`overlaybd-zfile --help\`. Goal: ≤ 60 ms for local commands; Node's own start-up (\`node -e 0\`, run alongside) is the floor. CPU = task-clock of the process, all threads (perf stat), median: on a loaded machine wall time is mostly the wait for a CPU.${BASELINE ? ` *Baseline CPU*: the same commands from the checkout ${BASELINE}, interleaved with these in the same run.` : ''}`,
    '',
    table(['command', 'obd wall', 'best run', 'CPU', ...(BASELINE ? ['baseline CPU'] : []), 'reference', 'obd / reference', 'obd / node -e 0'], rows),
  ].join('\n');
}

/**
 * The floor of a row: a Node process that reads its input file whole and writes as many
 * (non-zero) bytes as the row's output, 1 MiB per call, doing nothing else — Node's start-up and
 * the kernel's cost of the I/O, which every contender pays. argv: input, output, output bytes.
 */
const IO_FLOOR =
  "const fs=require('node:fs');const [i,o,n]=process.argv.slice(1);const b=Buffer.alloc(1<<20,90);let fd=fs.openSync(i,'r');for(let p=0;fs.readSync(fd,b,0,b.length,p)>0;p+=b.length);fs.closeSync(fd);b.fill(90);fd=fs.openSync(o,'w');for(let p=0;p<+n;p+=b.length)fs.writeSync(fd,b,0,Math.min(b.length,+n-p),p);fs.closeSync(fd)";
const floor = (input: string, out: string, bytes: number): Cmd => pinned(process.execPath, ['-e', IO_FLOOR, input, out, String(bytes)]);

async function commit(): Promise<string> {
  const data = f('rw.data');
  const index = f('rw.index');
  const rows: string[][] = [];
  // The floor reads the data file and writes as many bytes as it holds (the layer is ~ that).
  const [p0, pfl, p1] = sideBySide(
    [obd('commit', data, index, f('c-obd.lsmt'), ...NULL_UUID), floor(data, f('c-floor'), (await stat(data)).size), ...(haveRef ? [ref('overlaybd-commit', data, index, f('c-ref.lsmt'))] : [])],
    [f('c-obd.lsmt'), f('c-floor'), f('c-ref.lsmt')],
  );
  const plain = [p0!, ...(p1 ? [p1] : [])];
  const inproc = await lib(() => commitLayer(data, index, f('c-lib.lsmt')));
  const z = sideBySide(
    haveRef
      ? [obd('commit', data, index, f('c-obd.zfile'), '-z', 'lz4', ...NULL_UUID), obdMt('commit', data, index, f('c-obd2.zfile'), '-z', 'lz4', '-j', '2', ...NULL_UUID), ref('overlaybd-commit', '-z', data, index, f('c-ref.zfile'))]
      : [obd('commit', data, index, f('c-obd.zfile'), '-z', 'lz4', ...NULL_UUID), obdMt('commit', data, index, f('c-obd2.zfile'), '-z', 'lz4', '-j', '2', ...NULL_UUID)],
    [f('c-obd.zfile'), f('c-obd2.zfile'), f('c-ref.zfile')],
  );
  // The last runs' outputs are still there: compare them.
  for (const [name, a, b] of [
    ['`commit`', f('c-obd.lsmt'), f('c-ref.lsmt')],
    ['`commit -z lz4`', f('c-obd.zfile'), f('c-ref.zfile')],
  ] as const) {
    const [ours, theirs] = name === '`commit`' ? [plain[0]!, plain[1]] : [z[0]!, z[2]];
    rows.push([name, fmt(ms(ours)), theirs ? fmt(ms(theirs)) : NO_REF, theirs ? x(ratio(ours, theirs)) : '', theirs ? x(ratio(ours, theirs, 'cpu')) : '', theirs ? same(a, b) : '']);
  }
  rows.push(['`commit -z lz4 -j 2`', fmt(ms(z[1]!)), haveRef ? fmt(ms(z[2]!)) : NO_REF, haveRef ? x(ratio(z[1]!, z[2]!)) : '', haveRef ? x(ratio(z[1]!, z[2]!, 'cpu')) : '', same(f('c-obd2.zfile'), f('c-obd.zfile')) === 'identical' ? 'identical to -j 1' : 'differs from -j 1!']);
  const size = (await stat(f('c-lib.lsmt'))).size;
  return [
    '### Commit of a writable layer: 16384 random 4 KiB writes of random data over 1 GiB',
    `Committed layer ${(size / 2 ** 20).toFixed(1)} MiB; files on tmpfs; whole processes, ${RUNS} alternating runs after a warm-up, medians. \`commitLayer()\` in-process: ${fmt(inproc)}; floor (a Node process that reads the data file and writes as many bytes, 1 MiB per call, and does nothing else, run alternately with \`commit\`): ${fmt(ms(pfl!))}. CPU = user + system time of the process (all its threads).`,
    '',
    table(['command', 'obd', 'reference', 'wall obd / ref', 'CPU obd / ref', 'output vs reference'], rows),
  ].join('\n');
}

async function zfile(): Promise<string> {
  const rows: string[][] = [];
  const input = f('layer.lsmt');
  for (const [algo, kib] of [
    ['lz4', 4],
    ['lz4', 32],
    ['zstd', 4],
    ['zstd', 32],
  ] as const) {
    const o1 = f(`z-obd-${algo}${kib}.zfile`);
    const o2 = f(`z-obd2-${algo}${kib}.zfile`);
    const or = f(`z-ref-${algo}${kib}.zfile`);
    const common = ['--algorithm', algo, '--block-size', `${kib}K`];
    // In-process first: its output's size is what the floor writes.
    const inproc = await lib(() => compressFile(input, f('z-lib.zfile'), { algorithm: algo, blockSize: kib * 1024 }));
    const [a, b, fc, c] = sideBySide(
      [obd('zfile', 'compress', input, o1, ...common), obdMt('zfile', 'compress', input, o2, ...common, '-j', '2'), floor(input, f('z-floor.zfile'), (await stat(f('z-lib.zfile'))).size), ...(haveRef ? [ref('overlaybd-zfile', input, or, '--algorithm', algo, '--bs', String(kib))] : [])],
      [o1, o2, f('z-floor.zfile'), or],
    );
    const idOut = c ? same(o1, or) : '';
    const [dobd, dfl, dref] = sideBySide(
      [obd('zfile', 'decompress', o1, f('x-obd.raw')), floor(o1, f('x-floor.raw'), (await stat(input)).size), ...(haveRef ? [ref('overlaybd-zfile', '-x', o1, f('x-ref.raw'))] : [])],
      [f('x-obd.raw'), f('x-floor.raw'), f('x-ref.raw')],
    );
    const dlib = await lib(() => decompressFile(o1, f('x-lib.raw')));
    rows.push([
      `${algo} ${kib}K`,
      fmt(ms(a!)),
      fmt(inproc),
      fmt(ms(fc!)),
      c ? fmt(ms(c)) : NO_REF,
      c ? x(ratio(a!, c)) : '',
      c ? x(ratio(c, b!)) : '',
      c ? idOut : '',
      fmt(ms(dobd!)),
      fmt(dlib),
      fmt(ms(dfl!)),
      dref ? fmt(ms(dref)) : NO_REF,
      dref ? x(ratio(dobd!, dref)) : '',
    ]);
  }
  return [
    `### ZFile compress and decompress (${SIZE_MIB} MiB LSMT layer of semi-compressible data)`,
    `\`obd zfile compress\` vs \`overlaybd-zfile\`, \`obd zfile decompress\` vs \`overlaybd-zfile -x\`; files on tmpfs, whole processes, ${RUNS} alternating runs, medians of per-pair ratios; *floor* = a Node process that reads the row's input and writes as many bytes as its output, 1 MiB per call, and does nothing else. The reference compresses on one thread; \`-j 2\` is ours with two. zstd output is not expected to be byte-identical (see stack notes: another zstd version).`,
    '',
    table(['codec', 'compress obd', 'in-process', 'floor', 'reference', 'obd / ref', 'speed-up of obd -j 2 (ref / obd)', 'output', 'decompress obd', 'in-process', 'floor', 'reference -x', 'obd / ref'], rows),
  ].join('\n');
}


async function exportBench(): Promise<string> {
  const rows: string[][] = [];
  for (const [algo, kib] of [
    ['lz4', 4],
    ['lz4', 32],
    ['zstd', 16],
  ] as const) {
    const layer = f(`e-${algo}${kib}.zfile`);
    // Every contender leaves the disk's holes as holes: the floor writes the data the layer holds.
    const dataBytes = (await stat(f('layer.lsmt'))).size;
    await compressFile(f('layer.lsmt'), layer, { algorithm: algo, blockSize: kib * 1024 });
    const [a, fl, b] = sideBySide(
      [obd('export', layer, f('e-obd.raw')), floor(layer, f('e-floor.raw'), dataBytes), ...(haveRef ? [ref('obdref', 'cat', f('e-ref.raw'), layer)] : [])],
      [f('e-obd.raw'), f('e-floor.raw'), f('e-ref.raw')],
    );
    const inproc = await lib(async () => {
      const st = await openStack([layer]);
      try {
        await exportRaw(st, f('e-lib.raw'));
      } finally {
        await st.close();
      }
    });
    rows.push([`${algo} ${kib}K`, fmt(ms(a!)), fmt(inproc), fmt(ms(fl!)), b ? fmt(ms(b)) : NO_REF, b ? x(ratio(a!, b)) : '', b ? x(ratio(a!, b, 'cpu')) : '', b ? same(f('e-obd.raw'), f('e-ref.raw')) : '']);
  }
  return [
    `### Export of a zfile layer to a raw disk (${SIZE_MIB} MiB disk)`,
    `\`obd export LAYER OUT\` vs \`obdref cat OUT LAYER\` (the reference's LSMT and ZFile readers); files on tmpfs, whole processes, ${RUNS} alternating runs, medians of per-pair ratios; in-process = \`openStack\` + \`exportRaw\`; *floor* = a Node process that reads the layer and writes as many bytes as it holds data (the disk's holes stay holes in every output), 1 MiB per call, and does nothing else (run alternately with the others): Node's start-up plus the kernel's cost of the I/O, which every contender pays.`,
    '',
    table(['layer', 'obd', 'in-process', 'floor', 'reference', 'wall obd / ref', 'CPU obd / ref', 'output'], rows),
  ].join('\n');
}

const load = os.loadavg().map((l) => l.toFixed(2)).join(' ');
try {
  await inputs();
  const sections: [string, () => Promise<string>][] = [['startup', startup], ['commit', commit], ['zfile', zfile], ['export', exportBench]];
  const parts: string[] = [];
  for (const [name, run] of sections) if (!ONLY || ONLY.includes(name)) parts.push(await run());
  await writeResults(
    'reference',
    [
      '## Side by side with the reference C++ tools (bench/reference.ts)',
      `${haveRef ? `Reference tools from ${REF} (../shared/refbuild).` : `**The reference tools are not present at ${REF}: their rows are not measured.**`} Load average at start: ${load} (${os.cpus().length} CPUs shared with other work, so compare the ratios, which pair runs taken back to back). ${PIN ? 'Single-threaded runs pinned to CPU 0 (both sides), `-j 2` runs unpinned.' : 'Nothing pinned (`--pin` pins single-threaded runs to CPU 0).'} Below 1.00× obd is faster.`,
      ...parts,
    ].join('\n\n'),
  );
} finally {
  await rm(DIR, { recursive: true, force: true });
}

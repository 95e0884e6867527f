/**
 * Live snapshots (issue 15), side by side in one run:
 *  1. fio randwrite 4 KiB at queue depth 1 and 16 on an export of `obd serve --writable
 *     --control`, with no snapshots and with a snapshot (seal + commit + push to a loopback
 *     registry) started every 2 s: write latency p50/p99/max and IOPS, as ratios.
 *  2. Downtime of one snapshot of the same upper: ours (writes held during the switch,
 *     clients connected) against stop → obd commit → obd push → restart.
 * The server is pinned to CPU 0 and fio to CPU 1 (docs/benchmarking.md §2), the registry is
 * not pinned; data on tmpfs (§1). Rounds interleave the cases; figures are medians.
 *
 * `--registry-cpus LIST` pins the registry (taskset list) and `--registry-nice N` lowers its
 * priority: the loopback registry stands in for a remote one, whose CPU a real host never
 * pays, so `--registry-cpus 0 --registry-nice 19` keeps it off fio's CPU (the guest's).
 *
 * `--variant NAME=DIR[@RATE]` (repeatable) serves from the checkout in DIR (e.g. an older
 * commit extracted with git archive), with snapshots sent `"rate": RATE` (bytes/s) when given:
 * the variants alternate within each round, so before/after compare under the same load.
 * Default: this checkout alone. CPU seconds of the server's main (serving) thread and of the
 * whole process are read from /proc for each run: unlike latency, they do not depend on
 * what else the machine runs.
 *
 * Run: node bench/live.ts [--quick] [--rounds N] [--runtime S] [--registry-cpus LIST] [--registry-nice N] [--variant NAME=DIR[@RATE]]... [--no-downtime]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdir, open, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { controlRequest } from '../src/live/client.ts';
import { startRegistry, type RunningRegistry } from '../test/remote/helpers/registry.ts';
import { median, sh, table, writeResults } from './util.ts';

const argv = process.argv.slice(2);
const num = (name: string, dflt: number) => {
  const i = argv.indexOf(name);
  return i >= 0 ? Number(argv[i + 1]) : dflt;
};
const quick = argv.includes('--quick');
const ROUNDS = num('--rounds', quick ? 1 : 3);
const RUNTIME = num('--runtime', quick ? 6 : 10);
const INTERVAL_MS = 2000;
const strArg = (name: string) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const REGISTRY_CPUS = strArg('--registry-cpus');
const REGISTRY_NICE = strArg('--registry-nice') === undefined ? undefined : num('--registry-nice', 0);
const VSIZE = 1 << 30;
const HERE = path.dirname(fileURLToPath(import.meta.url));
const MAIN = path.join(HERE, '..', 'src', 'cli', 'main.ts');
interface Variant {
  name: string;
  main: string;
  rate: number | undefined;
}
const VARIANTS: Variant[] = argv.flatMap((a, i) => {
  if (a !== '--variant') return [];
  const m = /^([^=]+)=([^@]+)(?:@(\d+))?$/.exec(argv[i + 1] ?? '');
  if (!m) throw new Error(`--variant ${argv[i + 1]}: want NAME=DIR[@RATE]`);
  return [{ name: m[1]!, main: path.resolve(m[2]!, 'src', 'cli', 'main.ts'), rate: m[3] === undefined ? undefined : Number(m[3]) }];
});
if (VARIANTS.length === 0) VARIANTS.push({ name: 'this', main: MAIN, rate: undefined });
const DOWNTIME = !argv.includes('--no-downtime');
const CLK_TCK = 100;
const WORK = `/dev/shm/obd-live-bench-${process.pid}`;
const procs = new Set<ChildProcess>();

interface Served {
  child: ChildProcess;
  socket: string;
  control: string;
  exited: Promise<void>;
}

/** Starts obd serve on the base with a fresh upper, pinned to CPU 0; resolves once ready. */
async function serve(dir: string, layers: string[], upper = 'rw', withControl = true, main = MAIN): Promise<Served> {
  const socket = path.join(dir, 's.sock');
  const control = path.join(dir, 'c.sock');
  const args = [...layers, '--writable', '--upper', path.join(dir, `${upper}.data`), path.join(dir, `${upper}.index`), '--socket', socket, ...(withControl ? ['--control', control] : []), '--json'];
  const child = spawn('taskset', ['-c', '0', process.execPath, main, 'serve', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  procs.add(child);
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  void exited.then(() => procs.delete(child));
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', () => resolve());
    void exited.then(() => reject(new Error(`obd serve exited: ${err}`)));
  });
  return { child, socket, control, exited };
}

/** CPU seconds (user + system) of the server's main thread and of the whole process so far. */
async function cpuOf(pid: number): Promise<{ main: number; all: number }> {
  const ticks = async (f: string) => {
    const st = await readFile(f, 'utf8');
    const fields = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  };
  return { main: await ticks(`/proc/${pid}/task/${pid}/stat`), all: await ticks(`/proc/${pid}/stat`) };
}

async function stop(s: Served): Promise<void> {
  s.child.kill('SIGTERM');
  await s.exited;
}

interface FioResult {
  iops: number;
  p50: number;
  p99: number;
  max: number;
  /** Server CPU seconds during the run: main thread, whole process. */
  cpuMain?: number;
  cpuAll?: number;
  /** Writes completed. */
  ios?: number;
}

async function fio(socket: string, qd: number, runtime: number, extra: string[] = []): Promise<FioResult> {
  const out = path.join(WORK, `fio-${qd}.json`);
  await sh('taskset', [
    '-c',
    '1',
    'fio',
    '--name=w',
    '--ioengine=nbd',
    `--uri=nbd+unix:///?socket=${socket}`,
    `--size=${VSIZE}`,
    '--rw=randwrite',
    '--bs=4k',
    `--iodepth=${qd}`,
    '--randrepeat=0',
    ...(runtime > 0 ? ['--time_based', `--runtime=${runtime}`] : []),
    ...extra,
    '--output-format=json',
    `--output=${out}`,
  ]);
  const w = JSON.parse(await readFile(out, 'utf8')).jobs[0].write;
  const p = w.clat_ns.percentile as Record<string, number>;
  return { iops: w.iops, p50: p['50.000000']! / 1e3, p99: p['99.000000']! / 1e3, max: w.clat_ns.max / 1e3, ios: w.total_ios };
}

interface SnapStats {
  count: number;
  pauses: number[];
  totals: number[];
  failures: string[];
}

/** Starts a snapshot (seal + commit + push) every INTERVAL_MS until `done`; one at a time. */
function snapshotLoop(s: Served, reg: RunningRegistry, tag: string, done: Promise<void>, rate?: number): Promise<SnapStats> {
  const st: SnapStats = { count: 0, pauses: [], totals: [], failures: [] };
  let over = false;
  void done.then(() => (over = true));
  return (async () => {
    for (let k = 0; !over; k++) {
      const t0 = performance.now();
      try {
        const r = await controlRequest({ address: s.control }, 'POST', '/v1/snapshot', { push: `${reg.host}/bench/live:${tag}-${k}`, ...(rate === undefined ? {} : { rate }) });
        st.pauses.push(Number(r.pauseMs));
        st.totals.push(performance.now() - t0);
        st.count++;
      } catch (e) {
        st.failures.push((e as Error).message);
      }
      const wait = INTERVAL_MS - (performance.now() - t0);
      if (wait > 0 && !over) await new Promise((r) => setTimeout(r, wait));
    }
    return st;
  })();
}

async function fresh(name: string): Promise<string> {
  const dir = path.join(WORK, name);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  return dir;
}

const fmt = (x: number, d = 0) => x.toFixed(d);
const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}×`;

async function main(): Promise<void> {
  for (const tool of ['fio', 'taskset', 'docker-registry']) await sh('which', [tool]);
  await mkdir(WORK, { recursive: true });
  const reg = await startRegistry({ cpus: REGISTRY_CPUS, nice: REGISTRY_NICE });
  try {
    // Base: a 1 GiB disk with 64 MiB of data, pushed once (snapshots then upload only their layer).
    const raw = path.join(WORK, 'base.raw');
    const fh = await open(raw, 'w');
    const chunk = Buffer.alloc(1 << 20);
    for (let i = 0; i < 64; i++) {
      randomFillSync(chunk);
      await fh.write(chunk, 0, chunk.length, i * 16 * (1 << 20));
    }
    await fh.truncate(VSIZE);
    await fh.close();
    const base = path.join(WORK, 'base.lsmt');
    await sh(process.execPath, [MAIN, 'import', raw, base]);
    await rm(raw);
    await sh(process.execPath, [MAIN, 'push', base, `${reg.host}/bench/live:base`]);

    // 1. Latency and IOPS, none vs snapshots every 2 s, interleaved (variants too).
    const samples = new Map<string, FioResult[]>();
    const snaps = new Map<string, SnapStats[]>();
    for (let round = 0; round < ROUNDS; round++) {
      for (const qd of [1, 16]) {
        const variants = round % 2 ? [...VARIANTS].reverse() : VARIANTS;
        for (const v of variants) {
          for (const mode of round % 2 ? ['snap', 'none'] : ['none', 'snap']) {
            const dir = await fresh(`${mode}-${qd}`);
            const s = await serve(dir, [base], 'rw', true, v.main);
            try {
              let loop: Promise<SnapStats> | undefined;
              let finished!: () => void;
              const done = new Promise<void>((r) => (finished = r));
              const cpu0 = await cpuOf(s.child.pid!);
              if (mode === 'snap') loop = snapshotLoop(s, reg, `r${round}q${qd}${v.name}`, done, v.rate);
              const r = await fio(s.socket, qd, RUNTIME);
              finished();
              const key = `${v.name}|${mode}|${qd}`;
              if (loop) snaps.set(key, [...(snaps.get(key) ?? []), await loop]);
              const cpu1 = await cpuOf(s.child.pid!);
              r.cpuMain = cpu1.main - cpu0.main;
              r.cpuAll = cpu1.all - cpu0.all;
              samples.set(key, [...(samples.get(key) ?? []), r]);
              process.stderr.write(`round ${round} qd${qd} ${v.name} ${mode}: ${fmt(r.iops)} IOPS p50 ${fmt(r.p50)} µs p99 ${fmt(r.p99)} µs max ${fmt(r.max / 1000, 1)} ms, main thread ${r.cpuMain.toFixed(2)} s CPU, process ${r.cpuAll.toFixed(2)} s (load ${os.loadavg()[0]!.toFixed(1)})\n`);
            } finally {
              await stop(s);
            }
          }
        }
      }
    }

    const med = (key: string, f: (r: FioResult) => number) => median(samples.get(key)!.map(f));
    const rows: string[][] = [];
    const cpuRows: string[][] = [];
    for (const qd of [1, 16]) {
      for (const v of VARIANTS) {
        const n = `${v.name}|none|${qd}`;
        const y = `${v.name}|snap|${qd}`;
        const st = snaps.get(y)!;
        const count = st.reduce((a, s) => a + s.count, 0);
        const pauses = st.flatMap((s) => s.pauses);
        const label = VARIANTS.length > 1 ? `qd${qd} ${v.name}` : `qd${qd}`;
        rows.push([
          label,
          `${fmt(med(n, (r) => r.iops))} / ${fmt(med(y, (r) => r.iops))} (${ratio(med(y, (r) => r.iops), med(n, (r) => r.iops))})`,
          `${fmt(med(n, (r) => r.p50))} / ${fmt(med(y, (r) => r.p50))}`,
          `${fmt(med(n, (r) => r.p99))} / ${fmt(med(y, (r) => r.p99))} (${ratio(med(y, (r) => r.p99), med(n, (r) => r.p99))})`,
          `${fmt(med(n, (r) => r.max) / 1000, 1)} / ${fmt(med(y, (r) => r.max) / 1000, 1)}`,
          `${(count / ROUNDS).toFixed(1)} (${fmt(median(st.flatMap((s) => s.totals)) / 1000, 1)} s each); pause median ${fmt(median(pauses), 1)} ms, max ${fmt(Math.max(...pauses), 1)} ms`,
        ]);
        // Main-thread CPU per 10k writes, none vs snapshots, and what the snapshots added per run.
        const per10k = (key: string) => med(key, (r) => (r.cpuMain! / r.ios!) * 1e4);
        cpuRows.push([
          label,
          `${med(n, (r) => r.cpuMain!).toFixed(2)} / ${med(y, (r) => r.cpuMain!).toFixed(2)}`,
          `${(per10k(n) * 1000).toFixed(0)} / ${(per10k(y) * 1000).toFixed(0)}`,
          `${((per10k(y) - per10k(n)) * med(y, (r) => r.ios!) / 1e4).toFixed(2)}`,
          `${med(n, (r) => r.cpuAll!).toFixed(2)} / ${med(y, (r) => r.cpuAll!).toFixed(2)}`,
        ]);
      }
    }

    // 2. Downtime of one snapshot of the same upper (64 MiB of 4 KiB random writes).
    const ios = quick ? 4096 : 16384;
    const downRows: string[][] = [];
    for (let round = 0; DOWNTIME && round < ROUNDS; round++) {
      const dirA = await fresh(`down-live-${round}`);
      const a = await serve(dirA, [base], 'rw', true, VARIANTS.at(-1)!.main);
      let live: Record<string, unknown>;
      try {
        await fio(a.socket, 16, 0, [`--number_ios=${ios}`]);
        const t0 = performance.now();
        live = await controlRequest({ address: a.control }, 'POST', '/v1/snapshot', { push: `${reg.host}/bench/live:down-live-${round}` });
        live.wall = performance.now() - t0;
      } finally {
        await stop(a);
      }
      const dirB = await fresh(`down-off-${round}`);
      const b = await serve(dirB, [base], 'rw', false);
      await fio(b.socket, 16, 0, [`--number_ios=${ios}`]);
      const t1 = performance.now();
      await stop(b);
      const snap = path.join(dirB, 'snap.lsmt');
      await sh(process.execPath, [MAIN, 'commit', path.join(dirB, 'rw.data'), path.join(dirB, 'rw.index'), snap, '--keep-uuid']);
      await sh(process.execPath, [MAIN, 'push', base, snap, `${reg.host}/bench/live:down-off-${round}`]);
      const c = await serve(dirB, [base, snap], 'rw2', false);
      const offline = performance.now() - t1;
      await stop(c);
      downRows.push([`${round + 1}`, `${fmt(Number(live.pauseMs), 1)} ms (snapshot done in ${fmt(Number(live.wall) / 1000, 2)} s, clients connected)`, `${fmt(offline / 1000, 2)} s (clients disconnected)`]);
    }

    const fioVersion = (await sh('fio', ['--version'])).trim();
    const md = [
      '## Live snapshots (bench/live.ts)',
      '',
      `fio ${fioVersion} \`--rw=randwrite --bs=4k\` with its nbd engine on the export of \`obd serve --writable --control\` over a 1 GiB ` +
        `disk (a 64 MiB base layer already in the registry), ${RUNTIME} s per run, ${ROUNDS} round(s), medians; server pinned to CPU 0, fio to CPU 1, ` +
        `${REGISTRY_CPUS === undefined ? 'the docker-registry unpinned' : `the docker-registry pinned to CPU ${REGISTRY_CPUS}`}${REGISTRY_NICE === undefined ? '' : ` at nice ${REGISTRY_NICE}`}; data on tmpfs. ` +
        '"snapshots": `POST /v1/snapshot {"push": REF}` started every 2 s ' +
        '(seal, commit to a sealed layer, compress + tar-wrap, upload, manifest), one at a time — when one takes longer than 2 s the next starts right after it. Each cell is none / snapshots.',
      '',
      table(['queue depth', 'IOPS (ratio)', 'p50 µs', 'p99 µs (ratio)', 'max ms', 'snapshots per run'], rows),
      '',
      `CPU seconds of the server during each ${RUNTIME} s run (none / snapshots; medians; from /proc, so independent of what else runs): the main (serving) thread, its ms per 10k writes, what the snapshots added to it per run (the per-write difference times the writes done), and the whole process (snapshot thread and workers included):`,
      '',
      table(['queue depth', 'main thread s', 'main ms per 10k writes', 'added by snapshots, s per run', 'process s'], cpuRows),
      '',
      ...(VARIANTS.length > 1 ? [`Variants: ${VARIANTS.map((v) => `${v.name} = ${path.relative(process.cwd(), path.dirname(path.dirname(path.dirname(v.main)))) || '.'}${v.rate === undefined ? '' : ` with "rate": ${v.rate}`}`).join('; ')}.`, ''] : []),
      ...(DOWNTIME ? [`Downtime of one snapshot of an upper holding ${(ios * 4) / 1024} MiB of 4 KiB random writes, pushed to the loopback registry:`,
      '',
      table(['round', 'ours: writes held', 'stop → commit → push → restart'], downRows),
      ''] : []),
    ].join('\n');
    await writeResults(strArg('--out') ?? (REGISTRY_CPUS === undefined && REGISTRY_NICE === undefined ? 'live' : 'live-pinned-registry'), md);
  } finally {
    for (const p of procs) p.kill('SIGKILL');
    await reg.stop();
    await rm(WORK, { recursive: true, force: true });
  }
}

await main();

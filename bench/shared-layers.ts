/**
 * Many exports of images that share base layers, from one `obd serve` (issue 16): 16 images
 * in a loopback docker-registry, each 20 shared base layers plus a small top layer of its own,
 * served with a memory-only cache. fio (nbd engine, one process per export, same job name and
 * seed so every export reads the same offsets) reads 4 KiB at random, queue depth 16:
 *  - cold: a fixed number of reads per export from a fresh server; the bytes the registry
 *    sent (counted by a proxy in front of it);
 *  - warm: the same reads, time-based, right after; aggregate IOPS over all exports;
 *  - the server's peak RSS (VmHWM) after both.
 * Each figure is compared with one export of one of the images doing the same, in the same
 * run (rounds alternate 1 and 16 exports). Goals: bytes ≤ 1.05×, RSS ≤ 1.25× one export.
 *
 *   node bench/shared-layers.ts [--rounds N] [--exports N] [--reads N] [--runtime S] [--baseline CHECKOUT]
 *
 * --baseline runs another checkout's `obd` the same way, in the same rounds (before/after).
 * The server runs on CPU 0, fio on CPU 1, the registry on CPU 1.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeSealedLayer, type ExtentSpec } from '../src/lsmt/writer.ts';
import { pushImage } from '../src/image/push.ts';
import { RegistryClient } from '../src/remote/registry.ts';
import { startCountingProxy } from '../test/remote/helpers/counting-proxy.ts';
import { startRegistry } from '../test/remote/helpers/registry.ts';
import { median, Rng, sh, spawnReady, stopChild, table, writeResults } from './util.ts';

const argv = process.argv.slice(2);
const num = (name: string, dflt: number) => {
  const i = argv.indexOf(name);
  return i >= 0 ? Number(argv[i + 1]) : dflt;
};
const ROUNDS = num('--rounds', 3);
const EXPORTS = num('--exports', 16);
const READS = num('--reads', 4000);
const RUNTIME = num('--runtime', 5);
const BASE_LAYERS = 20;
const EXTENTS = 64;
const EXTENT = 64 << 10;
const VSIZE = 1 << 30;
/** The region the base layers fill and fio reads. */
const REGION = BASE_LAYERS * EXTENTS * EXTENT;
const HERE = path.dirname(fileURLToPath(import.meta.url));
const OBD = path.join(HERE, '..', 'src', 'cli', 'obd.js');
const baseline = argv.includes('--baseline') ? path.resolve(argv[argv.indexOf('--baseline') + 1]!) : undefined;
const baseRev = baseline ? execFileSync('git', ['-C', baseline, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim() : '';
const ENTRIES: [string, string][] = [['obd', OBD], ...(baseline ? [[`baseline ${baseRev}`, path.join(baseline, 'src', 'cli', 'obd.js')] as [string, string]] : [])];
const WORK = `/dev/shm/obd-bench-shared-${process.pid}`;
const procs = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of procs) p.kill('SIGKILL');
});

/** 4 KiB blocks half random, half a repeated pattern: compresses to about half, as disks do. */
function blockData(rng: Rng, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let at = 0; at < n; at += 4096) {
    out.set(randomBytes(2048), at);
    out.fill(0x41 + rng.int(26), at + 2048, at + 4096);
  }
  return out;
}

async function buildImages(reg: string): Promise<string[]> {
  await mkdir(WORK, { recursive: true });
  const rng = new Rng(16);
  const bases: string[] = [];
  let parent = '';
  for (let i = 0; i < BASE_LAYERS; i++) {
    const ext: ExtentSpec[] = [];
    for (let k = 0; k < EXTENTS; k++) ext.push({ offset: (k * BASE_LAYERS + i) * EXTENT, data: blockData(rng, EXTENT) });
    const uuid = randomUUID();
    const file = path.join(WORK, `base${i}.lsmt`);
    await writeSealedLayer(file, { virtualSize: VSIZE, uuid, parentUuid: parent }, ext);
    bases.push(file);
    parent = uuid;
  }
  const repo = `${reg}/bench/shared`;
  await pushImage(bases, `${repo}:base`, { plainHttp: true });
  const client = new RegistryClient(reg, { plainHttp: true });
  const base = await client.repository('bench/shared').getManifest('base');
  const refs: string[] = [];
  for (let j = 0; j < EXPORTS; j++) {
    const ext: ExtentSpec[] = [];
    for (let k = 0; k < 32; k++) ext.push({ offset: (k * (REGION / 32 / 4096) + rng.int(REGION / 32 / 4096)) * 4096, data: blockData(rng, 4096) });
    const file = path.join(WORK, `top${j}.lsmt`);
    await writeSealedLayer(file, { virtualSize: VSIZE, uuid: randomUUID(), parentUuid: parent }, ext);
    await client.repository('bench/shared').putManifest(base.bytes, base.mediaType, `t${j}`);
    await pushImage([file], `${repo}:t${j}`, { plainHttp: true, append: true });
    refs.push(`bench/shared:t${j}`);
  }
  await client.close();
  return refs;
}

interface Served {
  child: ChildProcess;
  socket: string;
  names: string[];
}

async function serve(obd: string, host: string, refs: string[]): Promise<Served> {
  const socket = path.join(WORK, `s-${process.hrtime.bigint()}.sock`);
  const names = refs.map((_, j) => `e${j}`);
  const args = [obd, 'serve', `${host}/${refs[0]}`, '--export', 'e0', ...refs.slice(1).flatMap((r, j) => ['--export', `e${j + 1}=${host}/${r}`]), '--socket', socket, '--json'];
  const child = await spawnReady('taskset', ['-c', '0', process.execPath, ...args]);
  procs.add(child);
  return { child, socket, names };
}

async function stop(s: Served): Promise<void> {
  await stopChild(s.child);
  procs.delete(s.child);
}

/** One fio per export, all at once, the same job name and seed: the same offsets on every export. */
async function fioAll(s: Served, timed: boolean): Promise<number> {
  const runs = s.names.map(async (name, j) => {
    const out = path.join(WORK, `fio-${j}.json`);
    await sh('taskset', [
      '-c',
      '1',
      'fio',
      '--name=r',
      '--ioengine=nbd',
      `--uri=nbd+unix:///${name}?socket=${s.socket}`,
      `--size=${REGION}`,
      '--rw=randread',
      '--bs=4k',
      '--iodepth=16',
      '--randseed=1616',
      ...(timed ? ['--time_based', `--runtime=${RUNTIME}`, '--ramp_time=1'] : [`--number_ios=${READS}`]),
      '--output-format=json',
      `--output=${out}`,
    ]);
    return JSON.parse(await readFile(out, 'utf8')).jobs[0].read.iops as number;
  });
  return (await Promise.all(runs)).reduce((a, b) => a + b, 0);
}

/** A memory figure of /proc/PID/status in MiB (VmRSS now, VmHWM the peak). */
async function memory(pid: number, field: 'VmRSS' | 'VmHWM'): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? 0) / 1024;
}

interface Sample {
  bytes: number;
  gets: number;
  iops: number;
  hwmMiB: number;
}

for (const tool of ['fio', 'taskset']) if (!existsSync(`/usr/bin/${tool}`)) throw new Error(`${tool} is needed`);
const registry = await startRegistry({ cpus: '1' });
const proxy = await startCountingProxy({ host: '127.0.0.1', port: registry.port });
try {
  const refs = await buildImages(registry.host);
  const samples = new Map<string, Sample[]>();
  const cases = ENTRIES.flatMap(([who, obd]) => [1, EXPORTS].map((n) => [`${who}|${n}`, obd, n] as const));
  for (let round = 0; round < ROUNDS; round++) {
    for (let k = 0; k < cases.length; k++) {
      const [key, obd, n] = cases[(k + round) % cases.length]!;
      const s = await serve(obd, proxy.host, refs.slice(0, n));
      try {
        const atReady = await memory(s.child.pid!, 'VmRSS');
        proxy.fetches.length = 0;
        await fioAll(s, false);
        const bytes = proxy.blobBytes();
        const gets = proxy.fetches.length;
        const afterCold = await memory(s.child.pid!, 'VmRSS');
        const iops = await fioAll(s, true);
        const hwmMiB = await memory(s.child.pid!, 'VmHWM');
        samples.set(key, [...(samples.get(key) ?? []), { bytes, gets, iops, hwmMiB }]);
        process.stderr.write(
          `round ${round} ${key}: ${(bytes / 2 ** 20).toFixed(1)} MiB in ${gets} GETs, ${Math.round(iops)} IOPS, ` +
            `RSS ${atReady.toFixed(0)} at ready, ${afterCold.toFixed(0)} after cold, peak ${hwmMiB.toFixed(0)} MiB\n`,
        );
      } finally {
        await stop(s);
      }
    }
  }
  const med = (key: string, f: (s: Sample) => number) => median(samples.get(key)!.map(f));
  const rows: string[][] = [];
  for (const [who] of ENTRIES) {
    const one = `${who}|1`;
    const many = `${who}|${EXPORTS}`;
    const ratio = (f: (s: Sample) => number) => (med(many, f) / med(one, f)).toFixed(2) + '×';
    rows.push([
      who,
      `${(med(one, (s) => s.bytes) / 2 ** 20).toFixed(1)} / ${(med(many, (s) => s.bytes) / 2 ** 20).toFixed(1)} MiB`,
      ratio((s) => s.bytes),
      `${med(one, (s) => s.hwmMiB).toFixed(0)} / ${med(many, (s) => s.hwmMiB).toFixed(0)} MiB`,
      ratio((s) => s.hwmMiB),
      `${Math.round(med(one, (s) => s.iops))} / ${Math.round(med(many, (s) => s.iops))}`,
      ratio((s) => s.iops),
    ]);
  }
  const blob = `${BASE_LAYERS} base layers of ${(EXTENTS * EXTENT) >> 20} MiB (lz4, 4 KiB blocks, verity trees) + a top of 32 × 4 KiB per image`;
  await writeResults(
    'shared-layers',
    [
      `## Many exports sharing base layers (issue 16, bench/shared-layers.ts)`,
      '',
      `${EXPORTS} exports of ${EXPORTS} images in one \`obd serve\` against one export of one of them. Each image: ${blob}, ` +
        `in a loopback docker-registry (CPU 1); memory-only cache (no --cache-dir). fio ${(await sh('fio', ['--version'])).trim()} ` +
        `(nbd engine, CPU 1), one process per export with the same job name and seed, so every export reads the same offsets: ` +
        `4 KiB random reads at queue depth 16 over the ${REGION >> 20} MiB the layers fill; cold = ${READS} reads per export on a fresh ` +
        `server (bytes counted by a proxy in front of the registry), then warm = ${RUNTIME} s time-based (IOPS summed over the exports). ` +
        `RSS = the server's VmHWM after both. Server on CPU 0. Medians of ${ROUNDS} rounds; cases alternate within each round.`,
      '',
      table(['server', `registry bytes (1 / ${EXPORTS})`, 'ratio (goal ≤ 1.05×)', `peak RSS (1 / ${EXPORTS})`, 'ratio (goal ≤ 1.25×)', `warm IOPS (1 / ${EXPORTS}, aggregate)`, 'ratio'], rows),
    ].join('\n'),
  );
} finally {
  await proxy.stop();
  await registry.stop();
  await rm(WORK, { recursive: true, force: true });
}

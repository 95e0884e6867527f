/**
 * qcow2 and NBD import benchmarks (issue 17), side by side in one run, alternating runs:
 *  1. `obd import disk.qcow2 out.lsmt` of a 4 GiB qcow2 holding 1 GiB of data, vs
 *     `qemu-img convert -O raw` + `obd import` of the raw file, vs the reference's
 *     overlaybd-create + `overlaybd-apply --from_qcow2 --no-extract-rootfs` + overlaybd-commit
 *     (when built at $OBD_REF_BIN, default /opt/obdref/bin). Every output is read back and
 *     its flattened bytes compared with the source.
 *  2. The same data as a 3-image chain (512 + 256 + 256 MiB of writes): flattened and --chain,
 *     vs qemu-img convert + obd import (the reference reads no backing files).
 *  3. NBD-source import from qemu-nbd vs nbdcopy of the export to a raw file.
 *
 * Files live on tmpfs (benchmarking.md §1). Commands may use every CPU, as a user runs them.
 * Run: node bench/qcow2.ts [--quick]   (--quick: 1 GiB disk holding 256 MiB)
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { access, mkdir, open, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openStack } from '../src/image/open.ts';
import type { BlockDevice } from '../src/io/types.ts';
import { openQcow2Chain } from '../src/qcow2/chain.ts';
import { importQcow2 } from '../src/qcow2/import.ts';
import { Rng, median, referenceServiceConfig, table, writeResults } from './util.ts';

const quick = process.argv.includes('--quick');
const GiB = 1 << 30;
const MiB = 1 << 20;
const SIZE = quick ? GiB : 4 * GiB;
const DATA = SIZE / 4;
const RUNS = quick ? 3 : 5;
const ROOT = path.dirname(fileURLToPath(import.meta.url));
const MAIN = path.join(ROOT, '..', 'src', 'cli', 'main.ts');
const REF = process.env.OBD_REF_BIN ?? '/opt/obdref/bin';
const DIR = `/dev/shm/obd-bench-qcow2-${process.pid}`;
const f = (name: string) => path.join(DIR, name);

function run(cmd: string, args: string[]): number {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], maxBuffer: 1 << 26 });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  return ms;
}
const obd = (...args: string[]) => run(process.execPath, [MAIN, ...args]);

/**
 * Writes 1 MiB extents of random bytes at random 1 MiB slots of a sparse raw file until
 * `bytes` more are written; returns nothing (the raw file is the expected flattened disk).
 */
async function scatter(raw: string, bytes: number, rng: Rng): Promise<void> {
  const fh = await open(raw, 'r+');
  const chunk = randomBytes(MiB);
  for (let done = 0; done < bytes; done += MiB) {
    chunk.writeUInt32LE(rng.int(2 ** 32), 0);
    await fh.write(chunk, 0, MiB, rng.int(SIZE / MiB) * MiB);
  }
  await fh.close();
}

async function sha256Device(dev: BlockDevice): Promise<string> {
  const h = createHash('sha256');
  const buf = new Uint8Array(16 * MiB);
  for (let at = 0; at < dev.size; at += buf.length) {
    const piece = buf.subarray(0, Math.min(buf.length, dev.size - at));
    await dev.read(piece, at);
    h.update(piece);
  }
  return h.digest('hex');
}

async function sha256Layers(files: string[]): Promise<string> {
  const s = await openStack(files);
  try {
    return await sha256Device(s);
  } finally {
    await s.close();
  }
}

function sha256File(p: string): string {
  return spawnSync('sha256sum', [p], { encoding: 'utf8' }).stdout.split(' ')[0]!;
}

const haveRef = await access(path.join(REF, 'overlaybd-apply')).then(() => true, () => false);

/** The reference's import: create a writable layer, apply the qcow2 into it, commit it. */
async function refSetup(): Promise<void> {
  await referenceServiceConfig(DIR);
  await writeFile(f('img.json'), JSON.stringify({ lowers: [], upper: { index: f('up.index'), data: f('up.data') }, resultFile: f('result') }));
}

function refImport(qcow2: string, out: string): number {
  let ms = run(path.join(REF, 'overlaybd-create'), [f('up.data'), f('up.index'), String(SIZE / GiB)]);
  ms += run(path.join(REF, 'overlaybd-apply'), ['--service_config_path', f('svc.json'), '--from_qcow2', '--no-extract-rootfs', qcow2, f('img.json')]);
  ms += run(path.join(REF, 'overlaybd-commit'), [f('up.data'), f('up.index'), out]);
  spawnSync('rm', ['-f', f('up.data'), f('up.index')]);
  return ms;
}

function qemuThenObd(qcow2: string, out: string): number {
  let ms = run('qemu-img', ['convert', '-O', 'raw', qcow2, f('tmp.raw')]);
  ms += obd('import', f('tmp.raw'), out);
  spawnSync('rm', ['-f', f('tmp.raw')]);
  return ms;
}

type Contender = { name: string; go: (i: number) => number; out: (i: number) => string[] };

/** Runs contenders alternately; returns median ms per contender. */
function alternate(cs: Contender[]): number[] {
  const times = cs.map(() => [] as number[]);
  for (let r = 0; r < RUNS; r++) {
    for (const [k, c] of cs.entries()) {
      for (const o of c.out(r)) spawnSync('rm', ['-rf', o]);
      times[k]!.push(c.go(r));
    }
  }
  return times.map(median);
}

const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
const rate = (ms: number) => `${(DATA / MiB / (ms / 1000)).toFixed(0)} MiB/s`;

async function main(): Promise<void> {
  await rm(DIR, { recursive: true, force: true });
  await mkdir(DIR, { recursive: true });
  const parts: string[] = [`## qcow2 and NBD import\n`];
  const load0 = os.loadavg()[0]!.toFixed(1);
  try {
    // One image: the raw source, converted by qemu-img.
    const raw = f('disk.raw');
    spawnSync('truncate', ['-s', String(SIZE), raw]);
    await scatter(raw, DATA, new Rng(17));
    run('qemu-img', ['convert', '-O', 'qcow2', raw, f('disk.qcow2')]);
    const want = sha256File(raw);
    if (haveRef) await refSetup();

    const cs: Contender[] = [
      { name: '`obd import disk.qcow2`', go: () => obd('import', f('disk.qcow2'), f('ours.lsmt')), out: () => [f('ours.lsmt')] },
      { name: '`qemu-img convert -O raw` + `obd import`', go: () => qemuThenObd(f('disk.qcow2'), f('qemu.lsmt')), out: () => [f('qemu.lsmt')] },
    ];
    if (haveRef) cs.push({ name: 'reference `overlaybd-create` + `overlaybd-apply --from_qcow2` + `overlaybd-commit`', go: () => refImport(f('disk.qcow2'), f('ref.lsmt')), out: () => [f('ref.lsmt')] });
    const t = alternate(cs);
    const outs = [[f('ours.lsmt')], [f('qemu.lsmt')], [f('ref.lsmt')]];
    const same = await Promise.all(cs.map(async (_, k) => (await sha256Layers(outs[k]!)) === want));
    // The library call alone, without Node's start-up.
    const lib: number[] = [];
    for (let r = 0; r < RUNS; r++) {
      await rm(f('lib.lsmt'), { force: true });
      const chain = await openQcow2Chain(f('disk.qcow2'));
      const t0 = performance.now();
      await importQcow2(chain, f('lib.lsmt'));
      lib.push(performance.now() - t0);
      await chain.device.close();
    }
    const fastestPeer = Math.min(...t.slice(1));
    parts.push(
      `Import of a ${SIZE / GiB} GiB qcow2 (64 KiB clusters) holding ${DATA / MiB} MiB of random data in 1 MiB extents; tmpfs; median of ${RUNS} alternated runs; whole processes (Node start-up included).\n`,
    );
    parts.push(
      table(
        ['contender', 'time', 'data rate', '× ours', 'reads back as the source'],
        cs.map((c, k) => [c.name, s(t[k]!), rate(t[k]!), (t[k]! / t[0]!).toFixed(2), same[k] ? 'yes' : '**no**']),
      ),
    );
    parts.push(`\nThe library call (\`importQcow2\`, in process): ${s(median(lib))} (${rate(median(lib))}). Ours is ${(fastestPeer / t[0]!).toFixed(2)}× faster than the fastest peer (goal ≥ 1.5×).${haveRef ? '' : ' The reference tools were not found at ' + REF + ': not measured.'}\n`);
    await rm(f('qemu.lsmt'), { force: true });
    await rm(f('ref.lsmt'), { force: true });
    await rm(f('lib.lsmt'), { force: true });
    await rm(f('disk.qcow2'), { force: true });

    // The same amount of data as a 3-image chain: qemu-io writes 1 MiB extents of random
    // bytes (from 4 pattern files) into each overlay, so each image holds only its writes.
    await rm(raw);
    for (let k = 0; k < 4; k++) await writeFile(f(`pat${k}`), randomBytes(MiB));
    const rng = new Rng(18);
    const images = ['c0.qcow2', 'c1.qcow2', 'c2.qcow2'];
    for (const [i, name] of images.entries()) {
      run('qemu-img', ['create', '-q', '-f', 'qcow2', ...(i ? ['-b', images[i - 1]!, '-F', 'qcow2'] : []), f(name), String(SIZE)]);
      const writes = (i === 0 ? DATA / 2 : DATA / 4) / MiB;
      const cmds = [...Array(writes).keys()].flatMap((w) => ['-c', `write -q -s ${f(`pat${w % 4}`)} ${rng.int(SIZE / MiB) * MiB} 1M`]);
      run('qemu-io', ['-f', 'qcow2', ...cmds, f(name)]);
    }
    run('qemu-img', ['convert', '-O', 'raw', f('c2.qcow2'), raw]);
    const wantChain = sha256File(raw);
    await rm(raw);
    const top = await openQcow2Chain(f('c2.qcow2'));
    const allocated = (await top.device.extents(0, SIZE)).filter((e) => e.kind === 'data').reduce((n, e) => n + e.length, 0);
    await top.device.close();
    const ccs: Contender[] = [
      { name: '`obd import top.qcow2` (flattened)', go: () => obd('import', f('c2.qcow2'), f('cflat.lsmt')), out: () => [f('cflat.lsmt')] },
      { name: '`obd import top.qcow2 DIR --chain` (3 layers)', go: () => obd('import', f('c2.qcow2'), f('clayers'), '--chain'), out: () => [f('clayers')] },
      { name: '`qemu-img convert -O raw` + `obd import`', go: () => qemuThenObd(f('c2.qcow2'), f('cqemu.lsmt')), out: () => [f('cqemu.lsmt')] },
    ];
    const ct = alternate(ccs);
    const layers = ['0-c0.lsmt', '1-c1.lsmt', '2-c2.lsmt'].map((n) => path.join(f('clayers'), n));
    const csame = [await sha256Layers([f('cflat.lsmt')]), await sha256Layers(layers), await sha256Layers([f('cqemu.lsmt')])].map((h) => h === wantChain);
    parts.push(`\nThe same amount of data as a 3-image chain (${DATA / 2 / MiB} + ${DATA / 4 / MiB} + ${DATA / 4 / MiB} MiB of 1 MiB random writes by qemu-io, some overwriting the images below). The reference's converter reads one file and no backing file, so it has no row here.\n`);
    parts.push(
      table(
        ['contender', 'time', '× ours (flattened)', 'reads back as the top image'],
        ccs.map((c, k) => [c.name, s(ct[k]!), (ct[k]! / ct[0]!).toFixed(2), csame[k] ? 'yes' : '**no**']),
      ),
    );
    for (const o of ['cflat.lsmt', 'clayers', 'cqemu.lsmt']) await rm(f(o), { recursive: true, force: true });

    // NBD source: qemu-nbd serving the top of the chain.
    const sock = f('nbd.sock');
    const srv = spawn('qemu-nbd', ['-r', '-t', '-f', 'qcow2', '-k', sock, f('c2.qcow2')], { stdio: 'ignore' });
    try {
      for (let i = 0; i < 100 && !(await access(sock).then(() => true, () => false)); i++) await new Promise((r) => setTimeout(r, 50));
      const uri = `nbd+unix:///?socket=${sock}`;
      const ncs: Contender[] = [
        { name: '`obd import nbd+unix://…` (layer)', go: () => obd('import', uri, f('nbd.lsmt')), out: () => [f('nbd.lsmt')] },
        { name: '`nbdcopy nbd+unix://… out.raw` (sparse raw file)', go: () => run('nbdcopy', [uri, f('nbdcopy.raw')]), out: () => [f('nbdcopy.raw')] },
      ];
      const nt = alternate(ncs);
      const nsame = [(await sha256Layers([f('nbd.lsmt')])) === wantChain, sha256File(f('nbdcopy.raw')) === wantChain];
      parts.push(`\nNBD source: qemu-nbd (default options) serving the top of that chain (${(allocated / MiB).toFixed(0)} MiB of data) on a unix socket; both clients skip what block status calls holes.\n`);
      parts.push(
        table(
          ['contender', 'time', 'data rate', '× ours', 'same bytes'],
          ncs.map((c, k) => [c.name, s(nt[k]!), `${(allocated / MiB / (nt[k]! / 1000)).toFixed(0)} MiB/s`, (nt[k]! / nt[0]!).toFixed(2), nsame[k] ? 'yes' : '**no**']),
        ),
      );
    } finally {
      srv.kill();
    }
    parts.push(`\nLoad average (1 min) at the start and end of the run: ${load0} → ${os.loadavg()[0]!.toFixed(1)} on ${os.cpus().length} CPUs; on a shared machine compare the ratios of one run only.\n`);
    await writeResults('qcow2', parts.join('\n') + '\n');
  } finally {
    await rm(DIR, { recursive: true, force: true });
  }
}

await main();

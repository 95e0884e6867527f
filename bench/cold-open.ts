/**
 * Cold open of a registry image: from spawning `obd serve REF` with an empty cache to the
 * first 4 KiB read answered over NBD, for a 20-layer zfile image and for the same data
 * flattened into one layer, on a loopback docker-registry. Also the process's peak memory
 * (VmHWM) and the GETs it made. Goal (issue 14): ≤ 100 ms, the flattened case near the
 * 20-layer one.
 *
 *   node bench/cold-open.ts [--runs N] [--baseline CHECKOUT]   (writes bench/results/cold-open.md)
 *
 * --baseline runs another checkout's `obd` (its src/cli/main.ts) alternately with this one,
 * for a before/after comparison in one run.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openStack } from '../src/image/open.ts';
import { commitLayer } from '../src/lsmt/commit.ts';
import { flattenStack } from '../src/lsmt/flatten.ts';
import { WritableLayer } from '../src/lsmt/writable.ts';
import { pushImage } from '../src/image/push.ts';
import { RawClient } from '../test/nbd/helpers/client.ts';
import { startRegistry } from '../test/remote/helpers/registry.ts';
import { median, obdCommand, Rng, spawnReady, stopChild, table, writeResults } from './util.ts';

const args = process.argv.slice(2);
const RUNS = Number(args[args.indexOf('--runs') + 1] || 7) || 7;
const LAYERS = 20;
const WRITES = 1024;
const OBD = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli', 'obd.js');
// The launcher when the checkout has one (its strip and compile caches are part of start-up), else main.ts.
const baseDir = args.includes('--baseline') ? path.resolve(args[args.indexOf('--baseline') + 1]!) : undefined;
const baseline = baseDir && [path.join(baseDir, 'src', 'cli', 'obd.js'), path.join(baseDir, 'src', 'cli', 'main.ts')].find((f) => existsSync(f));
const baseRev = baseline ? execFileSync('git', ['-C', path.dirname(baseline), 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim() : '';
const ENTRIES: [string, string][] = [['obd', OBD], ...(baseline ? [[`baseline ${baseRev}`, baseline] as [string, string]] : [])];

interface Sample {
  ready: number;
  firstRead: number;
  hwmKiB: number;
}

/** Spawns `obd serve ref` with a fresh cache dir; times ready and the first 4 KiB read; stops it. */
async function coldOpen(obd: string, ref: string, dir: string, want: Buffer): Promise<Sample> {
  const cache = await mkdtemp(path.join(dir, 'cache-'));
  const socket = path.join(dir, `s-${process.hrtime.bigint()}.sock`);
  const t0 = performance.now();
  const child = await spawnReady(...obdCommand(obd, ['serve', ref, '--socket', socket, '--cache-dir', cache, '--json']));
  try {
    const ready = performance.now() - t0;
    const c = await RawClient.connect({ socket });
    await c.handshake();
    const r = await c.read(0, 4096);
    const firstRead = performance.now() - t0;
    if (r.error !== 0 || !r.data?.equals(want)) throw new Error(`first read wrong (error ${r.error})`);
    c.disconnect();
    const status = await readFile(`/proc/${child.pid}/status`, 'utf8');
    const hwmKiB = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
    return { ready, firstRead, hwmKiB };
  } finally {
    await stopChild(child);
    await rm(cache, { recursive: true, force: true });
  }
}

const dir = await mkdtemp(path.join(os.tmpdir(), 'obd-bench-cold-'));
const registry = await startRegistry();
try {
  // 20 snapshots of a 1 GiB disk, each 1024 random 4 KiB writes (half-compressible).
  const files: string[] = [];
  const rng = new Rng(20);
  let parent: string | undefined;
  for (let k = 0; k < LAYERS; k++) {
    const data = path.join(dir, `l${k}.data`);
    const index = path.join(dir, `l${k}.index`);
    const w = await WritableLayer.create(data, index, { virtualSize: 1 << 30, parentUuid: parent });
    const payload = Buffer.alloc(WRITES * 4096);
    randomBytes(WRITES * 2048).copy(payload);
    for (let i = 0; i < WRITES; i++) await w.write(payload.subarray(i * 4096, (i + 1) * 4096), (k === 0 && i === 0 ? 0 : rng.int((1 << 30) / 4096)) * 4096);
    await w.close();
    const out = path.join(dir, `l${k}.lsmt`);
    parent = (await commitLayer(data, index, out, { uuid: randomUUID() })).uuid;
    files.push(out);
  }
  const stack = await openStack(files);
  const want = Buffer.alloc(4096);
  await stack.read(want, 0);
  await flattenStack(stack, path.join(dir, 'flat.lsmt'));
  await stack.close();
  const zfile = { algorithm: 'lz4' as const, blockSize: 4096 };
  await pushImage(files, `${registry.host}/bench/cold:layers`, { plainHttp: true, zfile });
  await pushImage([path.join(dir, 'flat.lsmt')], `${registry.host}/bench/cold:flat`, { plainHttp: true, zfile });

  const images = [
    [`${LAYERS} layers`, `${registry.host}/bench/cold:layers`],
    ['flattened (1 layer)', `${registry.host}/bench/cold:flat`],
  ] as const;
  const cases = images.flatMap(([name, ref]) => ENTRIES.map(([who, obd]) => [`${name}, ${who}`, ref, obd] as const));
  const samples: Sample[][] = cases.map(() => []);
  for (let r = -1; r < RUNS; r++) {
    for (let i = 0; i < cases.length; i++) {
      const s = await coldOpen(cases[i]![2], cases[i]![1], dir, want);
      if (r >= 0) samples[i]!.push(s);
    }
  }
  // The same open in this process, modules loaded: what is left once start-up is not counted.
  const openers = await Promise.all(
    [['obd', path.join(path.dirname(OBD), '..', 'image', 'open.ts')], ...(baseDir ? [[`baseline ${baseRev}`, path.join(baseDir, 'src', 'image', 'open.ts')]] : [])].map(
      async ([who, file]) => [who, ((await import(file!)) as typeof import('../src/image/open.ts')).openImage] as const,
    ),
  );
  const inCases = images.flatMap(([name, ref]) => openers.map(([who, open]) => [`${name}, ${who}`, ref, open] as const));
  const inProcess: number[][] = inCases.map(() => []);
  for (let r = -1; r < RUNS; r++) {
    for (let i = 0; i < inCases.length; i++) {
      const cache = await mkdtemp(path.join(dir, 'cache-'));
      const t0 = performance.now();
      const dev = await inCases[i]![2]([inCases[i]![1]], { cacheDir: cache, verifyChain: true });
      const got = Buffer.alloc(4096);
      await dev.read(got, 0);
      const ms = performance.now() - t0;
      await dev.close();
      await rm(cache, { recursive: true, force: true });
      if (!got.equals(want)) throw new Error('in-process first read wrong');
      if (r >= 0) inProcess[i]!.push(ms);
    }
  }
  const startup: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const t0 = performance.now();
    await new Promise((res) => spawn(...obdCommand(OBD, ['serve', '--help']), { stdio: 'ignore' }).once('exit', res));
    startup.push(performance.now() - t0);
  }
  const rows = cases.map(([name], i) => {
    const s = samples[i]!;
    return [name, `${median(s.map((x) => x.ready)).toFixed(0)} ms`, `${median(s.map((x) => x.firstRead)).toFixed(0)} ms`, `${median(inProcess[i]!).toFixed(0)} ms`, `${(median(s.map((x) => x.hwmKiB)) / 1024).toFixed(0)} MB`];
  });
  await writeResults(
    'cold-open',
    [
      '## Cold open of a registry image (bench/cold-open.ts)',
      `A loopback docker-registry holds a ${LAYERS}-layer image (snapshots of a 1 GiB disk, ${WRITES} random 4 KiB writes each, pushed as lz4 4K zfiles) and the same data flattened into one layer. Each sample spawns \`obd serve REF --cache-dir EMPTY\` and connects an NBD client as soon as it reports ready; the time runs from the spawn to the first 4 KiB read answered. *In-process* opens the same reference with \`openImage\` in the benchmark's process, its modules already loaded (no start-up), empty cache, up to the first 4 KiB read. Cases alternate, ${RUNS} runs each after a warm-up, medians; load average ${os.loadavg()[0]!.toFixed(2)}. Goal: ≤ 100 ms. No reference tool serves a registry image here (overlaybd-tcmu is not built), so there is no peer row.`,
      '',
      table(['image', 'spawn → ready', 'spawn → first read answered', 'in-process: open → first read', 'peak RSS (VmHWM)'], rows),
      '',
      `(\`obd serve --help\`, the start-up alone: ${median(startup).toFixed(0)} ms.)`,
    ].join('\n'),
  );
} finally {
  await registry.stop();
  await rm(dir, { recursive: true, force: true });
}

/**
 * Memory of `obd serve` for a large registry image (issue 14: ≤ 150 MB RSS cold and warm):
 * a 64-layer image of a 10 GiB disk on a loopback docker-registry, served with an empty disk
 * cache, then read whole over NBD twice — cold (every unit fetched from the registry) and
 * warm (from the disk cache) — by nbdcopy (one connection, 16 requests of 256 KiB in
 * flight, holes skipped through block status) into a sparse file compared with the layers'
 * flattened export. Reports the server's peak RSS (VmHWM, reset between phases
 * through /proc/PID/clear_refs) and RSS at the end of each phase.
 *
 *   node bench/memory.ts [--runs N] [--baseline CHECKOUT] [--node-flags "--max-semi-space-size=4"]
 *   (writes bench/results/memory.md)
 *
 * --baseline serves with another checkout's `obd` alternately with this one.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openStack } from '../src/image/open.ts';
import { exportRaw } from '../src/image/export.ts';
import { commitLayer } from '../src/lsmt/commit.ts';
import { WritableLayer } from '../src/lsmt/writable.ts';
import { pushImage } from '../src/image/push.ts';
import { startRegistry } from '../test/remote/helpers/registry.ts';
import { median, obdCommand, Rng, sh, spawnReady, stopChild, table, writeResults } from './util.ts';

const args = process.argv.slice(2);
/** --trace: the server's RSS every 100 ms, on stderr. */
const TRACE = args.includes('--trace');
const RUNS = Number(args[args.indexOf('--runs') + 1] || 3) || 3;
const LAYERS = 64;
const DISK = 10 * 2 ** 30;
const MiB = 2 ** 20;
/** The base layer: this many 1 MiB extents at random places; each layer above: 4 KiB writes. */
const BASE_EXTENTS = 384;
const WRITES = 1024;
const OBD = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli', 'obd.js');
const baseDir = args.includes('--baseline') ? path.resolve(args[args.indexOf('--baseline') + 1]!) : undefined;
const baseline = baseDir && [path.join(baseDir, 'src', 'cli', 'obd.js'), path.join(baseDir, 'src', 'cli', 'main.ts')].find((f) => existsSync(f));
const baseRev = baseDir ? execFileSync('git', ['-C', baseDir, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim() : '';
/** --node-flags "F …": one more entry, this checkout's obd run with these Node options (e.g. a smaller young generation). */
const nodeFlags = args.includes('--node-flags') ? args[args.indexOf('--node-flags') + 1]!.split(' ').filter(Boolean) : [];
const ENTRIES: [string, string, string[]][] = [
  ['obd', OBD, []],
  ...(nodeFlags.length ? [[`obd, node ${nodeFlags.join(' ')}`, OBD, nodeFlags] as [string, string, string[]]] : []),
  ...(baseline ? [[`baseline ${baseRev}`, baseline, []] as [string, string, string[]]] : []),
];

interface Sample {
  readyRss: number;
  coldHwm: number;
  coldRss: number;
  warmHwm: number;
  warmRss: number;
  coldMs: number;
  warmMs: number;
}

async function status(pid: number): Promise<{ hwm: number; rss: number }> {
  const s = await readFile(`/proc/${pid}/status`, 'utf8');
  const kib = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(s)?.[1] ?? 0);
  return { hwm: kib('VmHWM') / 1024, rss: kib('VmRSS') / 1024 };
}

/** Copies the whole export into a sparse file on tmpfs and compares it with the expected disk. */
async function readWhole(uri: string, want: string, copy: string): Promise<number> {
  const t0 = performance.now();
  await sh('nbdcopy', ['-C', '1', '--requests=16', '--request-size=262144', uri, copy]);
  const ms = performance.now() - t0;
  await sh('cmp', [want, copy]);
  await rm(copy);
  return ms;
}

async function serveAndRead(obd: string, flags: string[], ref: string, dir: string, want: string): Promise<Sample> {
  const cache = await mkdtemp(path.join(dir, 'cache-'));
  const socket = path.join(dir, `s-${process.hrtime.bigint()}.sock`);
  const child = await spawnReady(...obdCommand(obd, ['serve', ref, '--socket', socket, '--cache-dir', cache, '--cache-size', '8G', '--json'], flags));
  try {
    const pid = child.pid!;
    const trace: string[] = [];
    const t0 = performance.now();
    const sampler = TRACE ? setInterval(() => void status(pid).then((x) => trace.push(`${((performance.now() - t0) / 1000).toFixed(1)}s ${x.rss.toFixed(0)}`), () => {}), 100) : undefined;
    const uri = `nbd+unix:///?socket=${socket}`;
    const ready = await status(pid);
    const copy = path.join(SHM, 'copy.raw');
    const coldMs = await readWhole(uri, want, copy);
    const afterCold = await status(pid);
    await writeFile(`/proc/${pid}/clear_refs`, '5');
    const warmMs = await readWhole(uri, want, copy);
    const afterWarm = await status(pid);
    if (sampler) {
      clearInterval(sampler);
      console.error(`RSS (MB) every 100 ms, ${[obd, ...flags].join(' ')}: ${trace.join(', ')}`);
    }
    return { readyRss: ready.rss, coldHwm: afterCold.hwm, coldRss: afterCold.rss, warmHwm: afterWarm.hwm, warmRss: afterWarm.rss, coldMs, warmMs };
  } finally {
    await stopChild(child);
    await rm(cache, { recursive: true, force: true });
  }
}

const dir = await mkdtemp(path.join(os.tmpdir(), 'obd-bench-mem-'));
const SHM = await mkdtemp('/dev/shm/obd-bench-mem-');
const registry = await startRegistry();
try {
  const files: string[] = [];
  const rng = new Rng(64);
  let parent: string | undefined;
  let dataBytes = 0;
  for (let k = 0; k < LAYERS; k++) {
    const data = path.join(dir, `l${k}.data`);
    const index = path.join(dir, `l${k}.index`);
    const w = await WritableLayer.create(data, index, { virtualSize: DISK, parentUuid: parent });
    // Half random, half zeros: lz4 halves it, as real disk data often is.
    const piece = k === 0 ? MiB : 4096;
    const count = k === 0 ? BASE_EXTENTS : WRITES;
    const payload = Buffer.alloc(piece);
    for (let i = 0; i < count; i++) {
      randomBytes(piece / 2).copy(payload);
      await w.write(payload, rng.int(DISK / piece) * piece);
    }
    dataBytes += piece * count;
    await w.close();
    const out = path.join(dir, `l${k}.lsmt`);
    parent = (await commitLayer(data, index, out, { uuid: randomUUID() })).uuid;
    await rm(data);
    await rm(index);
    files.push(out);
  }
  // The bytes every read must give: the flattened disk, sparse on tmpfs.
  const stack = await openStack(files);
  const want = path.join(SHM, 'flat.raw');
  await exportRaw(stack, want);
  await stack.close();
  const ref = `${registry.host}/bench/mem:v1`;
  await pushImage(files, ref, { plainHttp: true, zfile: { algorithm: 'lz4', blockSize: 4096 } });
  for (const f of files) await rm(f);

  const samples: Sample[][] = ENTRIES.map(() => []);
  for (let r = 0; r < RUNS; r++) for (let i = 0; i < ENTRIES.length; i++) samples[i]!.push(await serveAndRead(ENTRIES[i]![1], ENTRIES[i]![2], ref, dir, want));
  const mb = (xs: number[]) => `${median(xs).toFixed(0)} MB`;
  const s = (x: number) => `${(x / 1000).toFixed(1)} s`;
  const rows = ENTRIES.map(([who], i) => {
    const v = samples[i]!;
    return [
      who,
      mb(v.map((x) => x.readyRss)),
      mb(v.map((x) => x.coldHwm)),
      mb(v.map((x) => x.coldRss)),
      mb(v.map((x) => x.warmHwm)),
      mb(v.map((x) => x.warmRss)),
      s(median(v.map((x) => x.coldMs))),
      s(median(v.map((x) => x.warmMs))),
    ];
  });
  await writeResults(
    'memory',
    [
      '## Memory serving a 64-layer 10 GiB registry image (bench/memory.ts)',
      `A loopback docker-registry holds ${LAYERS} layers of a 10 GiB disk (the base: ${BASE_EXTENTS} × 1 MiB at random places; each layer above: ${WRITES} random 4 KiB writes; ${(dataBytes / MiB).toFixed(0)} MiB written in all, half of it zeros), pushed as lz4 4K zfiles with verity trees. \`obd serve REF --cache-dir EMPTY\` serves it (with its launcher's shebang Node options, as users run it: they cap the young generation); nbdcopy (one connection, 16 × 256 KiB requests in flight, holes skipped) reads the whole disk cold (units from the registry) and then warm (from the disk cache), each copy compared with the flattened layers. Peak RSS is VmHWM, reset between the phases; RSS is at the end of each phase. Medians of ${RUNS} runs${baseline ? ', alternating' : ''}; load average ${os.loadavg()[0]!.toFixed(2)}. Goal: ≤ 150 MB cold and warm.`,
      '',
      table(['obd', 'RSS when ready', 'cold: peak', 'cold: RSS after', 'warm: peak', 'warm: RSS after', 'cold read', 'warm read'], rows),
    ].join('\n'),
  );
} finally {
  await registry.stop();
  await rm(dir, { recursive: true, force: true });
  await rm(SHM, { recursive: true, force: true });
}

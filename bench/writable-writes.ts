/**
 * 4 KiB random writes straight into WritableLayer (no NBD), at queue depth 1 and 16, for
 * checkouts side by side: writes per second and process CPU per write. Pin it to one CPU
 * (`taskset -c 0`) to see what the libuv pool's wake-ups cost a serving thread that shares
 * its core with them. Data on tmpfs. Variants alternate within each round; medians.
 *
 * Run: taskset -c 0 node bench/writable-writes.ts [--rounds N] [--writes N] [NAME=DIR]...
 *      (default: this checkout alone)
 */
import { mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { median, table } from './util.ts';

const argv = process.argv.slice(2);
const num = (name: string, dflt: number) => {
  const i = argv.indexOf(name);
  return i >= 0 ? Number(argv[i + 1]) : dflt;
};
const ROUNDS = num('--rounds', 5);
const WRITES = num('--writes', 40000);
const HERE = path.dirname(fileURLToPath(import.meta.url));
const specs = argv.filter((a, i) => a.includes('=') && !argv[i - 1]?.startsWith('--'));
const variants = specs.length ? specs.map((s) => s.split('=') as [string, string]) : [['this', path.join(HERE, '..')] as [string, string]];
type Layer = typeof import('../src/lsmt/writable.ts').WritableLayer;
const layers = new Map<string, Layer>();
for (const [name, dir] of variants) layers.set(name, (await import(path.resolve(dir, 'src/lsmt/writable.ts'))).WritableLayer);

const buf = new Uint8Array(4096).fill(1);
const rows = new Map<string, { rate: number[]; cpu: number[] }>();
for (let round = 0; round < ROUNDS; round++) {
  for (const qd of [1, 16]) {
    const order = round % 2 ? [...layers].reverse() : [...layers];
    for (const [name, Writable] of order) {
      const dir = await mkdtemp('/dev/shm/obd-wbench-');
      const w = await Writable.create(path.join(dir, 'd'), path.join(dir, 'i'), { virtualSize: 1 << 30 });
      let seed = round + 1;
      const next = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % 262144;
      let issued = 0;
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      await Promise.all(
        Array.from({ length: qd }, async () => {
          while (issued++ < WRITES) await w.write(buf, next() * 4096);
        }),
      );
      const ms = performance.now() - t0;
      const c = process.cpuUsage(c0);
      await w.close();
      await rm(dir, { recursive: true });
      const row = rows.get(`${name} qd${qd}`) ?? { rate: [], cpu: [] };
      row.rate.push((WRITES / ms) * 1000);
      row.cpu.push((c.user + c.system) / WRITES);
      rows.set(`${name} qd${qd}`, row);
    }
  }
}
console.log(table(['variant', 'writes/s', 'CPU µs per write'], [...rows].map(([k, r]) => [k, median(r.rate).toFixed(0), median(r.cpu).toFixed(1)])));

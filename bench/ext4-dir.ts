/**
 * Directory operations in memory (src/ext4/dir.ts over an in-memory DirBlocks): add, lookup
 * (hit and miss) and remove of 100,000 names in one htree, best of 3 runs. Goal (issue 18):
 * add+lookup ≥ 200,000 ops/s. A JS Map doing the same is printed alongside as a yardstick.
 *
 *   node bench/ext4-dir.ts [--names N]
 */
import os from 'node:os';
import { Directory, FT } from '../src/ext4/dir.ts';
import { MemBlocks } from '../test/ext4/dir-blocks.ts';

const arg = process.argv.indexOf('--names');
const N = arg > 0 ? Number(process.argv[arg + 1]) : 100_000;
const te = new TextEncoder();
// Names as in real trees: mostly short, some long, shared prefixes.
const names = Array.from({ length: N }, (_, i) => te.encode(i % 10 === 0 ? `lib-${i}-${'x'.repeat(i % 200)}.so` : `f${(Math.imul(i, 2654435761) >>> 0).toString(36)}.txt`));
const misses = names.map((n) => Uint8Array.of(...n, 0x7e));

async function once(): Promise<Record<string, number>> {
  const blocks = new MemBlocks(4096);
  await Directory.init(blocks, 12, 2);
  const dir = new Directory(blocks, { hash: 'half_md4', seed: new Uint32Array([1, 2, 3, 4]), unsigned: false, dirIndex: true }, false);
  const rate = async (fn: (n: Uint8Array, i: number) => Promise<unknown>, list = names): Promise<number> => {
    const t = performance.now();
    for (let i = 0; i < list.length; i++) await fn(list[i], i);
    return list.length / ((performance.now() - t) / 1000);
  };
  const add = await rate((name, i) => dir.add({ name, ino: 12 + i, fileType: FT.file }));
  const hit = await rate((name) => dir.lookup(name));
  const miss = await rate((name) => dir.lookup(name), misses);
  const remove = await rate((name) => dir.remove(name));
  const map = new Map<string, number>();
  const t = performance.now();
  for (let i = 0; i < N; i++) map.set(Buffer.from(names[i]).toString('latin1'), i);
  for (let i = 0; i < N; i++) map.get(Buffer.from(names[i]).toString('latin1'));
  const mapRate = (2 * N) / ((performance.now() - t) / 1000);
  return { add, hit, miss, remove, 'add+lookup': 2 / (1 / add + 1 / hit), 'Map set+get': mapRate, blocks: blocks.count };
}

const runs = [await once(), await once(), await once()];
const best = Object.fromEntries(Object.keys(runs[0]).map((k) => [k, Math.max(...runs.map((r) => r[k]))]));
console.log(`ext4 directory, ${N} names, best of 3 (load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}):`);
for (const [k, v] of Object.entries(best)) console.log(`  ${k.padEnd(12)} ${k === 'blocks' ? v : `${Math.round(v).toLocaleString('en')} ops/s`}`);

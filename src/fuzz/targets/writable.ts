/**
 * Writable layers: a data file and an index file, one of them mutated, opened for writing
 * as `obd serve --upper` does (crash recovery included) and read back. Neither file has
 * checksums, so changed bytes are undetectable by design.
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { HT_SPACE } from '../../lsmt/format.ts';
import { WritableLayer } from '../../lsmt/writable.ts';
import { readDevice } from '../readback.ts';
import { content, lsmtFields, MiB, readFixture } from '../seeds.ts';
import type { Seed, Target, TargetContext } from '../target.ts';

interface Pair {
  name: string;
  data: Uint8Array;
  index: Uint8Array;
}

async function generatedPair(ctx: TargetContext): Promise<Pair> {
  const data = path.join(ctx.tmp, 'gen.data');
  const index = path.join(ctx.tmp, 'gen.index');
  const w = await WritableLayer.create(data, index, { virtualSize: 8 * MiB, uuid: 'c0c0c0c0-0000-4000-8000-000000000001', overwrite: true });
  await w.write(content('w1', 64 * 1024), 0);
  await w.write(content('w2', 4096, true), 2 * MiB + 512);
  await w.write(content('w3', 12 * 1024), 16 * 1024);
  await w.trim(40 * 1024, 8192);
  await w.write(content('w4', 128 * 1024, true), 7 * MiB);
  await w.close();
  const pair = { name: 'generated', data: await readFile(data), index: await readFile(index) };
  await Promise.all([data, index, `${data}.lock`].map((f) => rm(f, { force: true })));
  return pair;
}

export const writableTarget: Target = {
  name: 'writable',
  async seeds(ctx) {
    const pairs: Pair[] = [
      { name: 'layer3-rw', data: await readFixture('lsmt/layer3-rw.data'), index: await readFixture('lsmt/layer3-rw.index') },
      await generatedPair(ctx),
    ];
    const out: Seed[] = [];
    for (const p of pairs) {
      out.push({ name: `${p.name}.index`, bytes: p.index, fields: lsmtFields(p.index, HT_SPACE, 16), guarded: false, meta: { other: p.data, role: 'index' } });
      out.push({ name: `${p.name}.data`, bytes: p.data, fields: lsmtFields(p.data), guarded: false, meta: { other: p.index, role: 'data' } });
    }
    return out;
  },
  async run(seed, input, ctx) {
    const data = path.join(ctx.tmp, 'rw.data');
    const index = path.join(ctx.tmp, 'rw.index');
    const isIndex = seed.meta!.role === 'index';
    await writeFile(data, isIndex ? (seed.meta!.other as Uint8Array) : input);
    await writeFile(index, isIndex ? input : (seed.meta!.other as Uint8Array));
    try {
      const layer = await WritableLayer.open(data, index);
      try {
        return await readDevice(layer, ctx.readCap);
      } finally {
        await layer.close();
      }
    } finally {
      await Promise.all([data, index, `${data}.lock`].map((f) => rm(f, { force: true })));
    }
  },
};

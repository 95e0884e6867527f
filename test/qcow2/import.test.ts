/**
 * `obd import` of qcow2 images, checked the way every import is: the imported stack's
 * flattened bytes equal `qemu-img convert -O raw` of the source.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { openStack } from '../../src/image/open.ts';
import { obd } from '../helpers/cli.ts';
import { inDir } from '../snapshots/helpers.ts';
import { SKIP, obdOk, makeChain, qemuImg, qemuRaw, setHeaderBit, stackBytes } from './helpers.ts';
import { withTempDir } from '../helpers/temp.ts';

test('a qcow2 chain flattens into one layer of its non-zero data, and a delta over --base', { skip: SKIP }, async () => {
  await withTempDir(async (dir) => {
    const t = inDir(dir);
    const c = await makeChain(t.dir);
    const want = await qemuRaw(c.top, t.dir);
    const flat = await obdOk(['import', c.top, t.file('flat.lsmt')]);
    assert.equal(flat.kind, 'qcow2');
    assert.deepEqual(flat.chain.map((i: { path: string }) => path.basename(i.path)), ['base.qcow2', 'mid.qcow2', 'top.qcow2']);
    assert.ok((await stackBytes([t.file('flat.lsmt')])).equals(want));
    // Only non-zero blocks are stored.
    let nonZero = 0;
    for (let at = 0; at < want.length; at += 4096) if (want.subarray(at, at + 4096).some((x) => x !== 0)) nonZero++;
    assert.equal(flat.dataBlocks, nonZero);
    assert.equal(flat.dataBytes, nonZero * 4096);

    const z = await obdOk(['import', c.top, t.file('flat.zst.lsmt'), '-z', 'zstd']);
    assert.ok(z.compressed.outputSize < flat.fileSize);
    assert.ok((await stackBytes([t.file('flat.zst.lsmt')])).equals(want));

    const mid = await obdOk(['import', c.mid, t.file('mid.lsmt')]);
    const delta = await obdOk(['import', c.top, t.file('delta.lsmt'), '--base', t.file('mid.lsmt')]);
    assert.equal(delta.parentUuid, mid.uuid);
    assert.ok(delta.dataBytes < flat.dataBytes / 2, 'the delta holds what the top changed, not the whole disk');
    assert.ok((await stackBytes([t.file('mid.lsmt'), t.file('delta.lsmt')])).equals(want));
  }, 'obd-snap-');
});

/** The ranges image `file` itself allocates (data or zero), widened to 4 KiB blocks. */
async function ownRanges(file: string): Promise<[number, number][]> {
  const map = JSON.parse(await qemuImg('map', '--output=json', file)) as { start: number; length: number; present: boolean; depth: number }[];
  return map.filter((m) => m.present && m.depth === 0).map((m) => [Math.floor(m.start / 4096) * 4096, Math.ceil((m.start + m.length) / 4096) * 4096]);
}

test('--chain writes one layer per image holding what that image stores; stacked they read as each image', { skip: SKIP }, async () => {
  await withTempDir(async (dir) => {
    const t = inDir(dir);
    const c = await makeChain(t.dir);
    const out = t.file('layers');
    const r = await obdOk(['import', c.top, out, '--chain']);
    const manifest = JSON.parse(await readFile(path.join(out, 'manifest.json'), 'utf8'));
    assert.deepEqual(manifest.layers, r.layers);
    assert.deepEqual(r.layers.map((l: { file: string }) => l.file), ['0-base.lsmt', '1-mid.lsmt', '2-top.lsmt']);
    assert.equal(r.layers[0].parentUuid, '00000000-0000-0000-0000-000000000000');
    for (let i = 1; i < 3; i++) assert.equal(r.layers[i].parentUuid, r.layers[i - 1].uuid);
    const files: string[] = r.layers.map((l: { file: string }) => path.join(out, l.file));
    const images = [c.base, c.mid, c.top];
    for (let i = 0; i < 3; i++) {
      // The first i+1 layers read as image i; the stack verifies the uuid chain.
      assert.ok((await stackBytes(files.slice(0, i + 1))).equals(await qemuRaw(images[i]!, t.dir)), `layers 0..${i} read as ${images[i]}`);
      // Each layer covers only what its image allocates.
      const own = await ownRanges(images[i]!);
      const s = await openStack([files[i]!]);
      for (const e of await s.extents(0, s.size)) {
        if (e.kind === 'hole') continue;
        assert.ok(own.some(([a, b]) => e.offset >= a && e.offset + e.length <= b), `layer ${i} [${e.offset}, +${e.length}) ${e.kind} lies in what ${path.basename(images[i]!)} allocates`);
      }
      await s.close();
    }
    // Zero clusters of upper images are zeroed extents that hide the data below.
    const top = await openStack(files);
    const at4M = (await top.extents(4 << 20, 65536))[0]!;
    assert.deepEqual([at4M.kind, at4M.layer], ['zero', 2]);
    await top.close();

    const again = await obd(['import', c.top, out, '--chain']);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already exists/);
    const z = await obdOk(['import', c.top, t.file('zlayers'), '--chain', '-z', 'lz4']);
    assert.ok(z.layers.every((l: { compressed: unknown }) => l.compressed));
    assert.ok((await stackBytes(z.layers.map((l: { file: string }) => path.join(t.file('zlayers'), l.file)))).equals(await qemuRaw(c.top, t.dir)));
  }, 'obd-snap-');
});

test('import refuses a dirty qcow2 image with one clear line unless --force, and bad option mixes', { skip: SKIP }, async () => {
  await withTempDir(async (dir) => {
    const t = inDir(dir);
    const f = t.file('d.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', f, '1M');
    await setHeaderBit(f, 79, 1);
    const r = await obd(['import', f, t.file('d.lsmt')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^obd: .*d\.qcow2: the image is marked dirty .*--force/);
    assert.ok(!(await readFile(t.file('d.lsmt')).catch(() => undefined)));
    await obdOk(['import', f, t.file('d.lsmt'), '--force']);
    await writeFile(t.file('x.raw'), Buffer.alloc(4096));
    const mix = await obd(['import', f, t.file('o'), '--chain', '--base', t.file('d.lsmt'), '--force']);
    assert.equal(mix.code, 1);
    assert.match(mix.stderr, /--chain .*--base/);
    const bitmap = await obd(['import', t.file('x.raw'), t.file('o.lsmt'), '--dirty-bitmap', 'b', '--base', t.file('d.lsmt')]);
    assert.equal(bitmap.code, 1);
    assert.match(bitmap.stderr, /not an NBD URI/);
  }, 'obd-snap-');
});

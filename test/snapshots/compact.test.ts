/** Compaction and resize of writable layers (docs/format.md §2.13), in process and through the CLI. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, readdir, stat, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { openStack } from '../../src/image/open.ts';
import { InvalidArgumentError } from '../../src/io/errors.ts';
import { swapPaths } from '../../src/lsmt/compact-swap.ts';
import { WritableLayer } from '../../src/lsmt/writable.ts';
import { obd } from '../helpers/cli.ts';
import { prng } from '../helpers/kill.ts';
import { DIGESTS } from '../helpers/recipes.ts';
import { tempDir } from '../helpers/temp.ts';
import { LSMT, deviceDigest, inDir } from './helpers.ts';

const V = 8 << 20;

/** Overwrite-heavy writes and some trims, mirrored into `model`. */
async function churn(w: WritableLayer, model: Uint8Array, seed: number, ops: number): Promise<void> {
  const rnd = prng(seed);
  for (let i = 0; i < ops; i++) {
    const len = (1 + Math.floor(rnd() * 16)) * 4096 - (i % 5 === 0 ? 1000 : 0);
    const at = Math.floor(rnd() * ((w.size - 65536) / 512)) * 512 + (i % 7 === 0 ? 100 : 0);
    if (i % 11 === 10) {
      await w.trim(at, len);
      model.fill(0, at, at + len);
    } else {
      const b = new Uint8Array(len).fill((seed + i) & 255);
      b[0] = i & 255;
      b[len - 1] = (i >> 8) & 255;
      await w.write(b, at);
      model.set(b, at);
    }
  }
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

test('compaction keeps every byte, drops dead data, and the compacted pair reopens the same', async (t) => {
  const d = inDir(await tempDir(t, 'obd-compact-'));
  const w = await WritableLayer.create(d.file('a.data'), d.file('a.index'), { virtualSize: V });
  const model = new Uint8Array(V);
  await churn(w, model, 1, 1200);
  const before = w.stats();
  assert.ok(before.dataFileBytes > 3 * before.liveDataBytes, 'the workload leaves most of the data file dead');
  let calls = 0;
  const r = await w.compact({ onProgress: () => calls++ });
  assert.ok(calls > 0);
  assert.equal(r.dataBytesBefore, before.dataFileBytes);
  assert.equal(r.dataBytesAfter, 4096 + before.liveDataBytes);
  assert.equal(r.reclaimed, r.dataBytesBefore - r.dataBytesAfter);
  assert.equal(r.entries, before.entries);
  assert.equal(await deviceDigest(w), sha(model));
  // Writes after the swap go to the new files.
  await churn(w, model, 2, 50);
  assert.equal(await deviceDigest(w), sha(model));
  await w.close();
  assert.deepEqual((await readdir(d.dir)).sort(), ['a.data', 'a.index']);
  const again = await WritableLayer.open(d.file('a.data'), d.file('a.index'), { readOnly: true });
  assert.equal(await deviceDigest(again), sha(model));
  assert.equal(again.recovery.droppedEntries, 0);
  assert.equal(again.uuid, w.uuid);
  await again.close();
});

test('writes, trims and flushes during an online compaction all land in the new files', async (t) => {
  const d = inDir(await tempDir(t, 'obd-compact-'));
  const w = await WritableLayer.create(d.file('a.data'), d.file('a.index'), { virtualSize: V });
  const model = new Uint8Array(V);
  await churn(w, model, 3, 800);
  const during = churn(w, model, 4, 300);
  const flushes = (async () => {
    for (let i = 0; i < 20; i++) await w.flush();
  })();
  const reads = (async () => {
    // Reads race the swap: each must see a consistent device (never garbage).
    const b = new Uint8Array(65536);
    for (let i = 0; i < 200; i++) await w.read(b, (i * 4096) % (V - 65536));
  })();
  const r = await w.compact();
  await Promise.all([during, flushes, reads]);
  assert.ok(r.rounds >= 1);
  assert.equal(await deviceDigest(w), sha(model));
  await w.flush();
  await w.close();
  const again = await WritableLayer.open(d.file('a.data'), d.file('a.index'), { readOnly: true });
  assert.equal(await deviceDigest(again), sha(model));
  await again.close();
});

test('the reference writable fixture over layers 1 and 2 still reads as layer 1+2+3 after compaction', async (t) => {
  const d = inDir(await tempDir(t, 'obd-compact-'));
  await copyFile(LSMT('layer3-rw.data'), d.file('rw.data'));
  await copyFile(LSMT('layer3-rw.index'), d.file('rw.index'));
  const r = await obd(['compact', d.file('rw.data'), d.file('rw.index'), '--json']);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.ok(j.reclaimed >= 0);
  assert.equal((await stat(d.file('rw.data'))).size, j.dataBytesAfter);
  const lower = await openStack([LSMT('layer1.lsmt'), LSMT('layer2.lsmt')]);
  const w = await WritableLayer.open(d.file('rw.data'), d.file('rw.index'), { lower, readOnly: true });
  try {
    assert.equal(await deviceDigest(w), DIGESTS.layer123);
  } finally {
    await w.close();
  }
  const human = await obd(['compact', d.file('rw.data'), d.file('rw.index')]);
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, /0 B reclaimed/);
});

test('opening rolls a committed swap forward and discards an unfinished one', async (t) => {
  const d = inDir(await tempDir(t, 'obd-compact-'));
  const w = await WritableLayer.create(d.file('a.data'), d.file('a.index'), { virtualSize: V });
  const model = new Uint8Array(V);
  await churn(w, model, 5, 200);
  await w.close();
  const p = swapPaths(d.file('a.data'), d.file('a.index'));
  // A compacted copy of the pair, placed as a compaction leaves it before its marker.
  await copyFile(d.file('a.data'), d.file('b.data'));
  await copyFile(d.file('a.index'), d.file('b.index'));
  const b = await WritableLayer.open(d.file('b.data'), d.file('b.index'));
  await b.compact();
  await b.close();
  await copyFile(d.file('b.data'), p.newData);
  await copyFile(d.file('b.index'), p.newIndex);
  const oldSize = (await stat(d.file('a.data'))).size;
  // No marker: the leftovers go, the old pair stays.
  let l = await WritableLayer.open(d.file('a.data'), d.file('a.index'));
  assert.equal(l.stats().dataFileBytes, oldSize);
  assert.equal(await deviceDigest(l), sha(model));
  await l.close();
  assert.deepEqual((await readdir(d.dir)).filter((n) => n.startsWith('a.')).sort(), ['a.data', 'a.index']);
  // Marker written, data already renamed, index not yet: the new pair is finished.
  await copyFile(d.file('b.data'), d.file('a.data'));
  await copyFile(d.file('b.index'), p.newIndex);
  await writeFile(p.marker, '{}\n');
  l = await WritableLayer.open(d.file('a.data'), d.file('a.index'), { readOnly: true });
  assert.equal(l.stats().dataFileBytes, (await stat(d.file('b.data'))).size);
  assert.equal(await deviceDigest(l), sha(model));
  await l.close();
  assert.deepEqual((await readdir(d.dir)).filter((n) => n.startsWith('a.')).sort(), ['a.data', 'a.index']);
});

test('resize grows durably; shrinking needs shrink and nothing mapped past the new end', async (t) => {
  const d = inDir(await tempDir(t, 'obd-compact-'));
  const w = await WritableLayer.create(d.file('a.data'), d.file('a.index'), { virtualSize: V });
  await w.write(new Uint8Array(4096).fill(1), 2 << 20);
  await w.resize(2 * V);
  assert.equal(w.size, 2 * V);
  await w.write(new Uint8Array(4096).fill(2), 2 * V - 4096);
  await assert.rejects(w.resize(V), (e: unknown) => e instanceof InvalidArgumentError && /shrink/.test(e.message));
  await assert.rejects(w.resize(V, { shrink: true }), /mapped up to byte/);
  await assert.rejects(w.resize(1000), /multiple of 512/);
  await w.trim(2 * V - 4096, 4096);
  // A trim is a zeroed mapping: still mapped.
  await assert.rejects(w.resize(V, { shrink: true }), /mapped up to byte/);
  await w.close();
  const cli = await obd(['resize', d.file('a.data'), d.file('a.index'), '--size', '32M', '--json']);
  assert.equal(cli.code, 0, cli.stderr);
  assert.deepEqual(JSON.parse(cli.stdout), { data: d.file('a.data'), index: d.file('a.index'), before: 2 * V, after: 32 << 20 });
  const unasked = await obd(['resize', d.file('a.data'), d.file('a.index'), '--size', '16M']);
  assert.notEqual(unasked.code, 0);
  assert.match(unasked.stderr, /needs shrink \(--shrink\)/);
  const shrink = await obd(['resize', d.file('a.data'), d.file('a.index'), '--size', '16M', '--shrink', '--json']);
  assert.equal(shrink.code, 0, shrink.stderr);
  const refused = await obd(['resize', d.file('a.data'), d.file('a.index'), '--size', '4M', '--shrink']);
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /mapped up to byte 16777216/);
  const l = await WritableLayer.open(d.file('a.data'), d.file('a.index'), { readOnly: true });
  assert.equal(l.size, 2 * V);
  const b = new Uint8Array(4096);
  await l.read(b, 2 << 20);
  assert.ok(b.every((x) => x === 1));
  await l.close();
});

test('compact and resize refuse a layer another process has open, and a read-only layer', async (t) => {
  const d = inDir(await tempDir(t, 'obd-compact-'));
  const w = await WritableLayer.create(d.file('a.data'), d.file('a.index'), { virtualSize: V });
  const r = await obd(['compact', d.file('a.data'), d.file('a.index'), '--json']);
  assert.notEqual(r.code, 0);
  assert.equal(JSON.parse(r.stdout).error.type, 'BusyError');
  await w.close();
  const ro = await WritableLayer.open(d.file('a.data'), d.file('a.index'), { readOnly: true });
  await assert.rejects(ro.compact(), /read-only|ReadOnly/i);
  await assert.rejects(ro.resize(2 * V), /read-only|ReadOnly/i);
  await ro.close();
});

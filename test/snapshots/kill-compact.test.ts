/**
 * SIGKILL trials of compaction (docs/format.md §2.13). Offline: `obd compact` killed at
 * changes spread over its run must leave, after reopening, the old pair or the new one, each
 * reading exactly as before. Online: a child writes and flushes while compacting back to
 * back; after every kill the layer must read as the first K ops for some K at least the
 * number of ops the child had acknowledged as flushed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { WritableLayer } from '../../src/lsmt/writable.ts';
import { prng, runObd, scatteredWritable, type Kill } from '../helpers/kill.ts';
import { tempDir } from '../helpers/temp.ts';
import { COMPACT_VSIZE, SLOT, SLOTS, consistentPrefix, slotOp } from './compact-ops.ts';
import { deviceDigest, inDir } from './helpers.ts';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'compact-child.ts');

test('obd compact killed anywhere leaves the old or the new pair, reading the same', { timeout: 240_000 }, async (ctx) => {
  const t = inDir(await tempDir(ctx, 'obd-killcompact-'));
  const work = inDir(path.join(t.dir, 'work'));
  await rm(work.dir, { recursive: true, force: true });
  await mkdir(work.dir);
  await scatteredWritable(t.file('src.data'), t.file('src.index'), 'kill-compact', 'c0c0c0c0-0000-4000-8000-00000000000c', undefined, 900);
  const src = await WritableLayer.open(t.file('src.data'), t.file('src.index'), { readOnly: true });
  const want = await deviceDigest(src);
  const oldSize = src.stats().dataFileBytes;
  await src.close();
  const fresh = async (): Promise<void> => {
    await rm(work.dir, { recursive: true, force: true });
    await mkdir(work.dir);
    await copyFile(t.file('src.data'), work.file('rw.data'));
    await copyFile(t.file('src.index'), work.file('rw.index'));
  };
  const target = { args: () => ['compact', work.file('rw.data'), work.file('rw.index')], watch: [work.dir] };
  await fresh();
  const ref = await runObd(target, 0, undefined);
  const newSize = (await stat(work.file('rw.data'))).size;
  assert.ok(newSize < oldSize / 2, `compaction reclaims most of the file (${oldSize} → ${newSize})`);
  const rnd = prng(77);
  const seen = { old: 0, new: 0, leftovers: 0 };
  // Kills spread over the copy, then one at each of the last changes (marker, renames, marker removal).
  const spread = 12;
  const tail = Math.min(8, ref.events - 1);
  const points = [...Array.from({ length: spread }, (_, i) => Math.max(1, Math.ceil((ref.events * (i + rnd())) / spread))), ...Array.from({ length: tail }, (_, j) => ref.events - j)];
  // And kills at the first change after the swap marker appears: inside the swap window.
  const marker = `${work.file('rw.data')}.compact-swap`;
  const kills: Kill[] = [...points.map((afterEvents) => ({ afterEvents })), ...Array.from({ length: 3 }, () => ({ when: () => existsSync(marker) }))];
  for (let i = 0; i < kills.length; i++) {
    await fresh();
    const kill = kills[i]!;
    const afterEvents = 'afterEvents' in kill! ? kill.afterEvents : 'marker';
    const r = await runObd(target, 0, kill);
    if ((await readdir(work.dir)).some((n) => n.includes('.compact'))) seen.leftovers++;
    const l = await WritableLayer.open(work.file('rw.data'), work.file('rw.index'), { readOnly: true });
    try {
      assert.equal(await deviceDigest(l), want, `kill ${i} (after ${afterEvents} of ${ref.events} changes) changed the disk`);
      const size = l.stats().dataFileBytes;
      assert.ok(size === oldSize || size === newSize, `kill ${i}: data file of ${size} bytes is neither the old (${oldSize}) nor the new (${newSize})`);
      if (size === newSize) seen.new++;
      else seen.old++;
      if (r.finished) assert.equal(size, newSize);
    } finally {
      await l.close();
    }
    assert.deepEqual((await readdir(work.dir)).filter((n) => !n.endsWith('.lock')).sort(), ['rw.data', 'rw.index'], `kill ${i}: opening left compaction files behind`);
  }
  ctx.diagnostic(`offline kills: ${JSON.stringify(seen)} of ${ref.events} changes`);
  assert.ok(seen.old > 0 && seen.new > 0, `kills landed on both sides of the swap (${JSON.stringify(seen)})`);
  assert.ok(seen.leftovers > 0, 'some kills interrupted a compaction midway');
});

/** Runs the child from op `start`, kills it `delayMs` after it is ready; returns the last acknowledged flush and compactions done. */
function runAndKill(data: string, index: string, start: number, seed: number, delayMs: number): Promise<{ acked: number; compactions: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, data, index, String(start), String(seed)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let acked = start;
    let compactions = 0;
    let out = '';
    let err = '';
    let timer: NodeJS.Timeout | undefined;
    const guard = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => (err += d));
    child.stdout.on('data', (d: string) => {
      out += d;
      let nl: number;
      while ((nl = out.indexOf('\n')) >= 0) {
        const [kind, n] = out.slice(0, nl).split(' ');
        out = out.slice(nl + 1);
        if (kind === 'R') timer ??= setTimeout(() => child.kill('SIGKILL'), delayMs);
        else if (kind === 'F') acked = Math.max(acked, Number(n));
        else if (kind === 'C') compactions = Number(n);
      }
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(guard);
      clearTimeout(timer);
      if (signal !== 'SIGKILL') reject(new Error(`child ended by itself (code ${code}, signal ${signal}): ${err}`));
      else resolve({ acked, compactions });
    });
  });
}

test('SIGKILL during online compaction with writes and flushes loses no flushed write', { timeout: 240_000 }, async (ctx) => {
  const t = inDir(await tempDir(ctx, 'obd-killcompact-'));
  const data = t.file('live.data');
  const index = t.file('live.index');
  const seed = 4242;
  const rnd = prng(seed);
  await (await WritableLayer.create(data, index, { virtualSize: COMPACT_VSIZE })).close();
  let start = 0;
  let compactions = 0;
  let midway = 0;
  for (let round = 0; round < 14; round++) {
    const r = await runAndKill(data, index, start, seed, 150 + rnd() * 700);
    compactions += r.compactions;
    if ((await readdir(t.dir)).some((n) => n.includes('.compact'))) midway++;
    const l = await WritableLayer.open(data, index, { readOnly: true });
    const seen: number[] = [];
    try {
      const b = new Uint8Array(SLOT);
      for (let s = 0; s < SLOTS; s++) {
        await l.read(b, s * SLOT);
        seen.push(slotOp(b));
      }
    } finally {
      await l.close();
    }
    const k = consistentPrefix(seed, seen, r.acked, Math.max(r.acked, ...seen) + 64);
    assert.ok(k >= 0, `round ${round}: the layer reads as no prefix of the ops from ${r.acked} on (flushed up to ${r.acked})`);
    start = k;
  }
  assert.ok(compactions > 0, 'the children completed compactions');
  assert.ok(start > 0, 'the children made progress');
  ctx.diagnostic(`online kills: ${compactions} compactions completed, ${midway} kills left a compaction midway, ${start} ops durable`);
});

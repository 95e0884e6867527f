/**
 * Crash safety: a child process writes and flushes in a loop and is SIGKILLed at random
 * moments, many times over the same layer. After each kill the layer is reopened and must
 * read exactly as the first K operations applied, for some K at least the number of
 * operations the child had acknowledged as flushed — nothing lost, nothing half-applied,
 * no garbage.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFile, stat, truncate } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { WritableLayer } from '../../src/lsmt/writable.ts';
import { CRASH_VSIZE, applyOp, crashOp } from './crash-ops.ts';
import { inDir, prng, readAll } from './helpers.ts';
import { tempDir } from '../helpers/temp.ts';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'crash-child.ts');

/**
 * Runs the child and kills it `delayMs` after it reported ready (or after spawning, when
 * `early`, so some kills land during start-up and recovery); returns the last acknowledged
 * flush and where the child resumed (-1 if it never got that far).
 */
function runAndKill(data: string, index: string, seed: number, delayMs: number, early: boolean): Promise<{ acked: number; started: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, data, index, String(seed)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let acked = -1;
    let started = -1;
    let out = '';
    let err = '';
    let timer: NodeJS.Timeout | undefined;
    const guard = setTimeout(() => child.kill('SIGKILL'), 30_000);
    if (early) timer = setTimeout(() => child.kill('SIGKILL'), delayMs);
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => (err += d));
    child.stdout.on('data', (d: string) => {
      out += d;
      let nl: number;
      while ((nl = out.indexOf('\n')) >= 0) {
        const [kind, n] = out.slice(0, nl).split(' ');
        out = out.slice(nl + 1);
        if (kind === 'R') {
          started = Number(n);
          timer ??= setTimeout(() => child.kill('SIGKILL'), delayMs);
        } else if (kind === 'F') acked = Math.max(acked, Number(n));
      }
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(guard);
      clearTimeout(timer);
      if (signal !== 'SIGKILL') reject(new Error(`child ended by itself (code ${code}, signal ${signal}): ${err}`));
      else resolve({ acked, started });
    });
  });
}

test('SIGKILL at random moments never loses flushed writes nor shows garbage', { timeout: 240_000 }, async (ctx) => {
  const t = inDir(await tempDir(ctx, 'obd-snap-'));
  const data = t.file('crash.data');
  const index = t.file('crash.index');
  const seed = 1234;
  const rnd = prng(seed);
  const model = new Uint8Array(CRASH_VSIZE);
  let applied = 0;
  let maxAcked = 0;
  let sawDropped = false;
  await (await WritableLayer.create(data, index, { virtualSize: CRASH_VSIZE })).close();
  // Mid-stream kills at random moments; some during start-up/recovery, some after long runs.
  // A slow machine only stretches the waits: rounds without any flush double the next one.
  let scale = 1;
  for (let round = 0; round < 24; round++) {
    const early = round % 6 === 0;
    const delay = early ? rnd(400) : (5 + rnd(round % 5 === 0 ? 600 : 150)) * scale;
    const r = await runAndKill(data, index, seed, delay, early);
    if (r.started >= 0) assert.equal(r.started, applied, `child resumed at op ${r.started}, expected ${applied}`);
    scale = !early && r.acked < 0 ? Math.min(scale * 2, 16) : 1;
    maxAcked = Math.max(maxAcked, r.acked);
    // Also tear the final entry now and then, as a crash inside a write(2) could.
    if (round % 4 === 3) await appendFile(index, Buffer.alloc(5 + rnd(10), 0xa5));
    const layer = await WritableLayer.open(data, index);
    try {
      const k = layer.recovery.entriesOnDisk - layer.recovery.droppedEntries;
      if (layer.recovery.droppedBytes > 0) sawDropped = true;
      assert.ok(k >= maxAcked, `round ${round}: ${k} ops survived but ${maxAcked} were acknowledged as flushed`);
      assert.ok(k >= applied, `round ${round}: ops went backwards (${k} < ${applied})`);
      for (; applied < k; applied++) applyOp(model, crashOp(seed, applied));
      const got = await readAll(layer);
      assert.ok(Buffer.from(got).equals(Buffer.from(model)), `round ${round}: device differs from the first ${k} ops`);
    } finally {
      await layer.close();
    }
    // Recovery cut the index back to whole, valid entries.
    assert.equal(((await stat(index)).size - 4096) % 16, 0);
  }
  assert.ok(maxAcked > 0, 'the child acknowledged flushes');
  assert.ok(sawDropped, 'some rounds had a torn tail to drop');
});

test('an entry pointing past the end of the data file ends the log on reopen', async (ctx) => {
  const t = inDir(await tempDir(ctx, 'obd-snap-'));
  const data = t.file('d');
  const index = t.file('i');
  const w = await WritableLayer.create(data, index, { virtualSize: 1 << 20 });
  await w.write(new Uint8Array(4096).fill(1), 0);
  await w.write(new Uint8Array(4096).fill(2), 8192);
  await w.write(new Uint8Array(4096).fill(3), 16384);
  await w.close();
  // Lose the data of the last two writes: their entries now dangle.
  await truncate(data, 4096 + 4096 + 100);
  const again = await WritableLayer.open(data, index);
  try {
    assert.deepEqual(again.recovery, { entriesOnDisk: 3, droppedEntries: 2, droppedBytes: 32 });
    const got = await readAll(again);
    assert.ok(got.subarray(0, 4096).every((b) => b === 1));
    assert.ok(got.subarray(4096).every((b) => b === 0), 'nothing of the lost writes shows');
    // New writes append after the surviving entry and survive the next reopen.
    await again.write(new Uint8Array(512).fill(9), 8192);
  } finally {
    await again.close();
  }
  assert.equal((await stat(index)).size, 4096 + 2 * 16);
  const third = await WritableLayer.open(data, index, { readOnly: true });
  try {
    assert.equal(third.recovery.droppedEntries, 0);
    const got = await readAll(third);
    assert.ok(got.subarray(8192, 8704).every((b) => b === 9));
  } finally {
    await third.close();
  }
});

/**
 * The heap trimmer hands memory glibc keeps after frees back to the system: a child process
 * frees ~190 MB of 64 KiB buffers (below malloc's mmap threshold, so they stay in its heap)
 * and reports its resident size before and after the trimmer has run.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { collect } from '../helpers/cli.ts';

const TRIM = pathToFileURL(path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'runtime', 'heap-trim.ts')).href;

const CHILD = `
const { startHeapTrim } = await import(${JSON.stringify(TRIM)});
let keep = [];
for (let i = 0; i < 3000; i++) keep.push(Buffer.alloc(64 * 1024, 1));
const last = keep.pop();
keep = null;
gc();
await new Promise((r) => setTimeout(r, 100));
gc();
const mb = () => Math.round(process.memoryUsage.rss() / 2 ** 20);
const before = mb();
const trimmer = process.argv.includes('trim') ? startHeapTrim({ everyMs: 20 }) : undefined;
const t = setInterval(() => {}, 1000);
await new Promise((r) => setTimeout(r, 400));
clearInterval(t);
trimmer?.stop();
console.log(JSON.stringify({ before, after: mb(), trims: trimmer?.trims ?? 0, kept: last.length }));
`;

async function run(mode: string): Promise<{ before: number; after: number; trims: number }> {
  const r = await collect(process.execPath, ['--expose-gc', '--input-type=module', '-e', CHILD, mode]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as { before: number; after: number; trims: number };
}

test('freed heap memory goes back to the system once the trimmer runs, and stays without it', { skip: process.platform !== 'linux' }, async () => {
  const plain = await run('plain');
  // glibc keeps the freed buffers: what makes the trimmer worth having.
  assert.ok(plain.before > 150 && plain.after > plain.before - 20, `without the trimmer: ${JSON.stringify(plain)}`);
  const trimmed = await run('trim');
  assert.ok(trimmed.trims >= 1, `trims: ${trimmed.trims}`);
  assert.ok(trimmed.after < trimmed.before - 100, `with the trimmer: ${JSON.stringify(trimmed)}`);
});

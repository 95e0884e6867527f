/** Outputs written through a temp: what appears under the final name, and which temps go. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { removeStaleTemps, tempPath, writeAtomic, writeFileAtomic } from '../../src/io/atomic.ts';
import { tempDir } from '../helpers/temp.ts';

test('removeStaleTemps removes the temps of dead writers of one output, and nothing else', async (t) => {
  const dir = await tempDir(t, 'obd-atomic-');
  const dead = spawnSync(process.execPath, ['-e', '']).pid!;
  const names = [`out.tmp-${dead}-0a1b`, `out.tmp-${process.pid}-0a1b`, `other.tmp-${dead}-0a1b`, 'out', 'out.tmp-notes', `out.tmp-${dead}`];
  for (const n of names) await writeFile(path.join(dir, n), 'x');
  await mkdir(path.join(dir, `out.tmp-${dead}-dir`));
  await writeFile(path.join(dir, `out.tmp-${dead}-dir`, 'inner'), 'x');
  assert.equal(await removeStaleTemps(dir, 'out'), 2);
  assert.deepEqual((await readdir(dir)).sort(), [`other.tmp-${dead}-0a1b`, 'out', `out.tmp-${dead}`, `out.tmp-${process.pid}-0a1b`, 'out.tmp-notes'].sort());
  assert.equal(await removeStaleTemps(dir), 1, 'without a name, every dead writer\'s temp goes');
  assert.equal(await removeStaleTemps(path.join(dir, 'missing')), 0);
});

test('writeAtomic: the final name appears only complete; a failure leaves neither it nor the temp', async (t) => {
  const dir = await tempDir(t, 'obd-atomic-');
  const out = path.join(dir, 'out');
  await writeFileAtomic(out, 'first');
  await assert.rejects(
    writeAtomic(out, async (tmp) => {
      await writeFile(tmp, 'half');
      throw new Error('disk full');
    }),
    /disk full/,
  );
  assert.equal(await readFile(out, 'utf8'), 'first', 'a failed replacement keeps the old output');
  assert.deepEqual(await readdir(dir), ['out']);
  assert.match(path.basename(tempPath(out)), new RegExp(`^out\\.tmp-${process.pid}-[0-9a-f]{8}$`));
});

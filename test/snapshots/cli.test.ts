/** The snapshot commands end to end: `obd create/commit/merge/import/rw-info`. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openStack } from '../../src/image/open.ts';
import { exportRaw } from '../../src/image/export.ts';
import { DIGESTS } from '../helpers/recipes.ts';
import { LSMT, deviceDigest, inDir } from './helpers.ts';
import { withTempDir } from '../helpers/temp.ts';

const MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.ts');

function obd(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], { timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

async function digestOf(files: string[]): Promise<string> {
  const s = await openStack(files);
  try {
    return await deviceDigest(s);
  } finally {
    await s.close();
  }
}

test('create, commit, merge and import from the command line', async () => {
  await withTempDir(async (dir) => {
    const t = inDir(dir);
    const c = await obd('create', t.file('w.data'), t.file('w.index'), '--size', '64M', '--parent', 'a2a2a2a2-0000-4000-8000-000000000002', '--json');
    assert.equal(c.code, 0, c.stderr);
    const created = JSON.parse(c.stdout);
    assert.equal(created.virtualSize, 64 << 20);
    assert.equal(created.parentUuid, 'A2A2A2A2-0000-4000-8000-000000000002');
    const again = await obd('create', t.file('w.data'), t.file('w.index'), '--size', '64M');
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already exists/);

    const fromBase = await obd('create', t.file('b.data'), t.file('b.index'), '--base', LSMT('layer1.lsmt'), LSMT('layer2.lsmt'), '--json');
    assert.equal(fromBase.code, 0, fromBase.stderr);
    assert.equal(JSON.parse(fromBase.stdout).parentUuid, 'A2A2A2A2-0000-4000-8000-000000000002');
    assert.equal(JSON.parse(fromBase.stdout).virtualSize, 67108864);
    const info = await obd('rw-info', t.file('b.data'), t.file('b.index'), '--json');
    assert.equal(JSON.parse(info.stdout).entries, 0);

    const commit = await obd('commit', LSMT('layer3-rw.data'), LSMT('layer3-rw.index'), t.file('l3.lsmt'), '--uuid', 'a3a3a3a3-0000-4000-8000-000000000003', '--parent', 'a2a2a2a2-0000-4000-8000-000000000002', '--json');
    assert.equal(commit.code, 0, commit.stderr);
    assert.equal(JSON.parse(commit.stdout).entries, 8);
    assert.deepEqual(await readFile(t.file('l3.lsmt')), await readFile(LSMT('layer3.lsmt')));

    const z = await obd('commit', LSMT('layer3-rw.data'), LSMT('layer3-rw.index'), t.file('l3.tar'), '--keep-uuid', '-z', 'zstd', '--block-size', '16K', '--tar', '-m', 'compressed');
    assert.equal(z.code, 0, z.stderr);
    assert.equal(await digestOf([LSMT('layer1.lsmt'), LSMT('layer2.lsmt'), t.file('l3.tar')]), DIGESTS.layer123);

    const merge = await obd('merge', LSMT('layer1.lsmt'), LSMT('layer2.lsmt'), t.file('l3.tar'), t.file('merged.lsmt'), '--json');
    assert.equal(merge.code, 0, merge.stderr);
    assert.equal(JSON.parse(merge.stdout).layers, 3);
    assert.equal(await digestOf([t.file('merged.lsmt')]), DIGESTS.layer123);

    const base = await openStack([LSMT('layer1.lsmt'), LSMT('layer2.lsmt'), LSMT('layer3.lsmt')]);
    await exportRaw(base, t.file('disk.raw'));
    await base.close();
    const imp = await obd('import', t.file('disk.raw'), t.file('delta.lsmt'), '--base', LSMT('layer1.lsmt'), LSMT('layer2.lsmt'), '--json');
    assert.equal(imp.code, 0, imp.stderr);
    const r = JSON.parse(imp.stdout);
    assert.ok(r.zeroedBlocks > 0 && r.dataBlocks > 0);
    assert.equal(await digestOf([LSMT('layer1.lsmt'), LSMT('layer2.lsmt'), t.file('delta.lsmt')]), DIGESTS.layer123);
    const human = await obd('import', t.file('disk.raw'), t.file('full.lsmt'));
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /full\.lsmt: \d+ entries/);
  }, 'obd-snap-');
});

test('bad input fails with one clear line and leaves nothing behind', async () => {
  await withTempDir(async (dir) => {
    const t = inDir(dir);
    const cases: [string[], RegExp][] = [
      [['merge', LSMT('layer2.lsmt'), LSMT('layer1.lsmt'), t.file('out.lsmt')], /parent uuid/],
      [['import', t.file('missing.raw'), t.file('out.lsmt')], /missing\.raw: no such file/],
      [['import', LSMT('layer1.lsmt'), t.file('out.lsmt'), '--base', LSMT('layer1.lsmt')], /differs from the base's virtual size/],
      [['commit', LSMT('layer3-rw.data'), t.file('nope.index'), t.file('out.lsmt')], /nope\.index: no such file/],
      [['commit', LSMT('layer3-rw.index'), LSMT('layer3-rw.data'), t.file('out.lsmt')], /swapped/],
      [['commit', LSMT('layer3-rw.data'), LSMT('layer3-rw.index'), t.file('out.lsmt'), '--uuid', 'not-a-uuid'], /not a UUID/],
      [['commit', LSMT('layer3-rw.data'), LSMT('layer3-rw.index'), t.file('out.lsmt'), '--tar'], /need --compress/],
      [['create', t.file('x.data'), t.file('x.index')], /--size/],
      [['create', t.file('x.data'), t.file('x.index'), '--size', '1000'], /512-byte sectors/],
    ];
    for (const [args, re] of cases) {
      const r = await obd(...args);
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re, args.join(' '));
      assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    }
    assert.deepEqual(await readdir(t.dir), [], 'no outputs or temp files left');
  }, 'obd-snap-');
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { DIGESTS, FIXTURES, sha256 } from '../helpers/recipes.ts';
import { obd } from '../helpers/cli.ts';
import { withTempDir } from '../helpers/temp.ts';

const L = (n: string) => path.join(FIXTURES, 'lsmt', n);

test('obd info --json reports header, trailer and index figures', async () => {
  const r = await obd(['info', '--json', L('layer2.lsmt')]);
  assert.equal(r.code, 0, r.stderr);
  const info = JSON.parse(r.stdout);
  assert.equal(info.uuid, 'A2A2A2A2-0000-4000-8000-000000000002');
  assert.equal(info.parentUuid, 'A1A1A1A1-0000-4000-8000-000000000001');
  assert.equal(info.virtualSize, 67108864);
  assert.equal(info.entries, 70);
  assert.equal(info.indexEntriesOnDisk, 256);
  assert.equal(info.indexBytes, 4096);
  assert.equal(info.dataBytes, 1454080 - 4096);
  assert.equal(info.header.flags, 7);
  assert.equal(info.trailer.flags, 6);
  assert.deepEqual(info.wrapping, ['lsmt']);
});

test('obd info on a compressed layer shows the wrapping; human output names the fields', async () => {
  const r = await obd(['info', L('layer1.lz4bs4.zfile')]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /format\s+zfile > lsmt/);
  assert.match(r.stdout, /uuid\s+A1A1A1A1-0000-4000-8000-000000000001/);
  assert.match(r.stdout, /entries\s+25 \(23 data, 2 zeroed/);
});

test('obd export writes the flattened disk, sparse, with the manifest digest', async () => {
  await withTempDir(async (dir) => {
    const out = path.join(dir, 'disk.raw');
    const r = await obd(['export', '--json', L('layer1.lsmt'), L('layer2.lsmt'), L('layer3.lsmt'), out]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).size, 67108864);
    assert.equal(sha256(await readFile(out)), DIGESTS.layer123);
    const st = await stat(out);
    assert.ok(st.blocks * 512 < 16 * 1024 * 1024, `sparse: ${st.blocks * 512} bytes allocated`);
  }, 'obd-export-');
});

test('bad input: clear message, non-zero exit, nothing half-written', async () => {
  await withTempDir(async (dir) => {
    let r = await obd(['info', path.join(dir, 'missing.lsmt')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /missing\.lsmt: no such file/);
    r = await obd(['info', L('layer3-rw.index')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /writable layer's index file/);
    r = await obd(['export', '--verify-chain', L('layer1.lsmt'), L('layer3.lsmt'), path.join(dir, 'x.raw')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /parent uuid .* does not match/);
    r = await obd(['export', L('layer1.lsmt'), path.join(FIXTURES, 'MANIFEST.md'), path.join(dir, 'y.raw')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /MANIFEST\.md.*not an LSMT layer/);
    assert.deepEqual(await readdir(dir), []);
    r = await obd(['export', L('layer1.lsmt')]);
    assert.notEqual(r.code, 0);
  }, 'obd-export-');
});

test('obd map lists extents with the layer that backs each', async () => {
  const r = await obd(['map', '--json', L('layer1.lsmt'), L('layer2.lsmt')]);
  assert.equal(r.code, 0, r.stderr);
  const m = JSON.parse(r.stdout);
  assert.deepEqual(m[0], { start: 0, length: 32768, depth: 1, present: true, zero: true, data: false });
  assert.equal(m.reduce((s: number, e: { length: number }) => s + e.length, 0), 67108864);
  const human = await obd(['map', L('layer1.lsmt'), L('layer2.lsmt')]);
  assert.match(human.stdout, /^ +0 +32768 +zero +1 .*layer2\.lsmt$/m);
});

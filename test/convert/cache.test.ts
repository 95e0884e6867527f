/**
 * The conversion cache's keys and the pipeline's failure handling, with a layer engine that
 * writes each tar as it is (helpers/raw-engine.ts) so only the pipeline is under test: which
 * settings make another entry, that an engine failing mid-image leaves no destination, no
 * work files and only the entries of the layers that finished, and the config splice.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { convertImage, type ConvertOptions } from '../../src/convert/convert.ts';
import { replaceDiffIds } from '../../src/convert/config.ts';
import type { LayerEngine } from '../../src/convert/engine.ts';
import { NoSpaceError } from '../../src/io/errors.ts';
import { tempDir } from '../helpers/temp.ts';
import { layer, tarOf, writeOciLayout, writeTree, type BuiltLayer } from '../helpers/small-images.ts';
import { rawEngine } from './helpers/raw-engine.ts';

async function image(dir: string, n: number): Promise<BuiltLayer[]> {
  const out: BuiltLayer[] = [];
  for (let i = 0; i < n; i++) {
    await writeTree(path.join(dir, `t${i}`), { [`f${i}`]: `layer ${i}\n` });
    out.push(layer(tarOf(path.join(dir, `t${i}`)), i % 2 ? 'gzip' : 'plain'));
  }
  await writeOciLayout(path.join(dir, 'src'), out);
  return out;
}

const entries = async (cacheDir: string) => (await readdir(path.join(cacheDir, 'convert-v1'))).filter((n) => !n.includes('.tmp-')).length;

test('cache keys: the vsize, algorithm, block size and engine version each make other entries; the thread count does not', async (t) => {
  const dir = await tempDir(t);
  await image(dir, 2);
  const cacheDir = path.join(dir, 'cache');
  const base: ConvertOptions = { engine: rawEngine, vsize: 64 << 20, cacheDir, tmpDir: dir };
  let n = 0;
  const run = (o: ConvertOptions) => convertImage(`oci:${dir}/src`, `oci:${dir}/out${n++}`, { ...base, ...o });
  assert.equal((await run({})).cacheHits, 0);
  assert.equal((await run({ threads: 3 })).cacheHits, 2);
  for (const o of [{ vsize: 128 << 20 }, { algorithm: 'zstd' as const }, { blockSize: 16384 }, { engine: { ...rawEngine, version: 'raw-test/2' } }]) {
    assert.equal((await run(o)).cacheHits, 0, JSON.stringify(o));
    assert.equal((await run(o)).cacheHits, 2, JSON.stringify(o));
  }
  assert.equal(await entries(cacheDir), 10);
});

test('an engine failing at the third layer: a typed error, no destination, no work files, the two finished layers cached', async (t) => {
  const dir = await tempDir(t);
  await image(dir, 4);
  const cacheDir = path.join(dir, 'cache');
  let calls = 0;
  const failing: LayerEngine = {
    version: rawEngine.version,
    apply: (dev, tar, o) => (++calls === 3 ? Promise.reject(new NoSpaceError(`${dev.name}: full`)) : rawEngine.apply(dev, tar, o)),
  };
  await assert.rejects(convertImage(`oci:${dir}/src`, `oci:${dir}/out:v1`, { engine: failing, vsize: 64 << 20, cacheDir, tmpDir: dir }), NoSpaceError);
  await assert.rejects(readdir(`${dir}/out`), { code: 'ENOENT' });
  assert.deepEqual((await readdir(dir)).filter((x) => x.startsWith('obd-convert')), []);
  assert.equal(await entries(cacheDir), 2);
  // The next run picks up where this one failed.
  const r = await convertImage(`oci:${dir}/src`, `oci:${dir}/out:v1`, { engine: rawEngine, vsize: 64 << 20, cacheDir, tmpDir: dir });
  assert.deepEqual(r.layers.map((l) => l.cached), [true, true, false, false]);
  const index = JSON.parse(await readFile(`${dir}/out/index.json`, 'utf8'));
  assert.equal(index.manifests[0].digest, r.digest);
});

test('the config splice keeps every other byte: key order, spacing, escapes, integer-like keys, duplicate keys', () => {
  const ids = ['sha256:' + 'a'.repeat(64), 'sha256:' + 'b'.repeat(64)];
  const text = '{"z":1,"10":{"\\u003c":"\\u003e"},"rootfs" : {"type":"layers", "diff_ids" : [ "old" ] ,"x":[{"diff_ids":1}]},"history":[{"created":"2024-01-01T00:00:00.000000001Z","empty_layer":true}],"n":1.50}';
  const out = Buffer.from(replaceDiffIds(Buffer.from(text), ids, 'test')).toString();
  assert.equal(out, text.replace('[ "old" ]', JSON.stringify(ids)));
  // JSON.parse takes the last of duplicate keys, and so does the splice.
  const dup = '{"rootfs":{"diff_ids":["first"]},"rootfs":{"diff_ids":["second"],"type":"layers"}}';
  assert.equal(Buffer.from(replaceDiffIds(Buffer.from(dup), ids, 'test')).toString(), dup.replace('["second"]', JSON.stringify(ids)));
  assert.throws(() => replaceDiffIds(Buffer.from('{"rootfs":{}}'), ids, 'test'), /diff_ids/);
  assert.throws(() => replaceDiffIds(Buffer.from('{"rootfs":'), ids, 'test'), /not JSON/);
});

/**
 * convertImage end to end on small images built here (GNU tar layers; plain, gzip and zstd):
 * the result's manifest, config and layer chain; its filesystem checked by e2fsck and read by
 * debugfs; byte-identical output across runs and across images sharing base layers; the
 * cache; registries as source and destination with cross-repository mounts; docker save
 * archives; and bad inputs failing with typed errors and leaving nothing behind.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { link, readdir, readFile, truncate } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { convertImage, type ConvertOptions } from '../../src/convert/convert.ts';
import { DiffIdMismatchError, UnsupportedLayerError } from '../../src/convert/pipeline-errors.ts';
import { chainIds, uuidOfChainId } from '../../src/convert/identity.ts';
import { InvalidArgumentError, ObdError } from '../../src/io/errors.ts';
import { copyImage } from '../../src/remote/pull.ts';
import { openRepository, resolveImage } from '../../src/remote/image.ts';
import { parseReference } from '../../src/remote/reference.ts';
import { startRegistry } from '../remote/helpers/registry.ts';
import { tempDir } from '../helpers/temp.ts';
import { imageConfig, layer, sha256, tarOf, writeDockerArchive, writeOciLayout, writeTree, type BuiltLayer } from '../helpers/small-images.ts';
import { assertFsck, blobFile, catFile, exportLayout, layoutManifest, listDir } from './helpers/check.ts';

const VSIZE = 256 << 20;
const BIG = randomBytes(300_000);

/** Three layers: a base with many kinds of entries, one that overwrites and deletes, one that deletes a directory. */
async function buildLayers(dir: string, top = 'motd v1\n'): Promise<BuiltLayer[]> {
  const many: Record<string, string> = {};
  for (let i = 0; i < 300; i++) many[`data/many/file-${String(i).padStart(4, '0')}`] = `entry ${i}\n`;
  await writeTree(path.join(dir, 'l0'), {
    'etc/hostname': 'base\n',
    'bin/sh': { mode: 0o755, data: '#!/bin/true\n' },
    'usr/lib/big.bin': BIG,
    lib: { symlink: 'usr/lib' },
    'old/file': 'to be deleted\n',
    'old/keep': 'deleted with its directory\n',
    'opt/gone': 'deleted by a whiteout\n',
    ...many,
  });
  await link(path.join(dir, 'l0/bin/sh'), path.join(dir, 'l0/bin/sh2'));
  await writeTree(path.join(dir, 'l1'), { 'etc/hostname': 'layer one\n', 'opt/.wh.gone': '', 'srv/new.txt': 'new in layer 1\n' });
  await writeTree(path.join(dir, 'l2'), { '.wh.old': '', 'etc/motd': top });
  return [layer(tarOf(path.join(dir, 'l0')), 'plain'), layer(tarOf(path.join(dir, 'l1')), 'gzip'), layer(tarOf(path.join(dir, 'l2')), 'zstd')];
}

async function source(dir: string, top?: string): Promise<{ layout: string; layers: BuiltLayer[] }> {
  const layers = await buildLayers(dir, top);
  const layout = path.join(dir, 'src');
  await writeOciLayout(layout, layers, { tag: 'v1' });
  return { layout, layers };
}

function opts(dir: string, more: ConvertOptions = {}): ConvertOptions {
  return { vsize: VSIZE, tmpDir: dir, threads: 1, ...more };
}

/** Nothing of a conversion's work is left in `dir` (no work directory, no staged cache entry). */
async function assertNoLeftovers(dir: string, cacheDir?: string): Promise<void> {
  assert.deepEqual((await readdir(dir)).filter((n) => n.startsWith('obd-convert')), []);
  if (cacheDir) assert.deepEqual((await readdir(path.join(cacheDir, 'convert-v1'))).filter((n) => n.includes('.tmp-')), []);
}

test('a three-layer image (plain, gzip, zstd) becomes an overlaybd image: chain, annotations, config, and an ext4 that e2fsck passes', async (t) => {
  const dir = await tempDir(t);
  const { layout, layers } = await source(dir);
  const out = path.join(dir, 'out');
  const r = await convertImage(`oci:${layout}:v1`, `oci:${out}:obd`, opts(dir));
  await assertNoLeftovers(dir);

  const chain = chainIds(layers.map((l) => l.diffId));
  assert.deepEqual(r.layers.map((l) => [l.chainId, l.uuid, l.parentUuid, l.cached]), chain.map((c, i) => [c, uuidOfChainId(c), i ? uuidOfChainId(chain[i - 1]!) : '', false]));
  const m = await layoutManifest(out, 'obd');
  assert.equal(m.digest, r.digest);
  assert.equal(JSON.parse(m.bytes.toString()).mediaType, 'application/vnd.oci.image.manifest.v1+json');
  for (const [i, l] of m.doc.layers.entries()) {
    assert.equal(l.mediaType, 'application/vnd.oci.image.layer.v1.tar');
    assert.deepEqual(l.annotations, { 'containerd.io/snapshot/overlaybd/blob-digest': l.digest, 'containerd.io/snapshot/overlaybd/blob-size': String(l.size), 'containerd.io/snapshot/overlaybd/version': '0.1.0' });
    assert.equal(l.digest, r.layers[i]!.digest);
    assert.equal(sha256(await readFile(blobFile(out, l.digest))), l.digest);
  }
  // The config is the source's with only rootfs.diff_ids replaced (the blob digests).
  const config = await readFile(blobFile(out, m.doc.config.digest));
  const expected = imageConfig(layers).toString().replace(JSON.stringify(layers.map((l) => l.diffId)), JSON.stringify(r.layers.map((l) => l.digest)));
  assert.equal(config.toString(), expected);

  const raw = path.join(dir, 'disk.raw');
  await exportLayout(out, 'obd', raw);
  assertFsck(raw);
  assert.equal(catFile(raw, '/etc/hostname').toString(), 'layer one\n');
  assert.equal(catFile(raw, '/etc/motd').toString(), 'motd v1\n');
  assert.deepEqual(catFile(raw, '/usr/lib/big.bin'), BIG);
  assert.equal(catFile(raw, '/bin/sh2').toString(), '#!/bin/true\n');
  assert.equal(catFile(raw, '/srv/new.txt').toString(), 'new in layer 1\n');
  assert.equal(listDir(raw, '/data/many').length, 300);
  assert.deepEqual(listDir(raw, '/opt'), [], 'the whiteout deleted opt/gone');
  assert.ok(!listDir(raw, '/').includes('old'), 'the whiteout deleted old/');
  assert.ok(!listDir(raw, '/').some((n) => n.startsWith('.wh.')), 'whiteouts are not created');
});

test('deterministic: the same source gives the same bytes, and the same base layers the same blobs in another image', async (t) => {
  const dir = await tempDir(t);
  const { layout } = await source(path.join(dir, 'a'));
  const a = await convertImage(`oci:${layout}:v1`, `oci:${dir}/out1:x`, opts(dir, { threads: 1 }));
  const b = await convertImage(`oci:${layout}:v1`, `oci:${dir}/out2:x`, opts(path.join(dir, 'a'), { threads: 2 }));
  assert.equal(b.digest, a.digest, 'same manifest (any thread count, any work directory)');
  assert.deepEqual(b.layers.map((l) => l.digest), a.layers.map((l) => l.digest));
  for (const l of a.layers) assert.deepEqual(await readFile(blobFile(`${dir}/out1`, l.digest)), await readFile(blobFile(`${dir}/out2`, l.digest)));

  // Another image with the same two base layers (built again, from the same trees) and another top.
  const other = await source(path.join(dir, 'b'), 'motd v2\n');
  const c = await convertImage(`oci:${other.layout}:v1`, `oci:${dir}/out3:x`, opts(dir));
  assert.deepEqual(c.layers.slice(0, 2).map((l) => l.digest), a.layers.slice(0, 2).map((l) => l.digest));
  assert.notEqual(c.layers[2]!.digest, a.layers[2]!.digest);
});

test('the cache: a second conversion converts nothing, an image sharing the base converts only its top, a damaged entry is converted again', async (t) => {
  const dir = await tempDir(t);
  const cacheDir = path.join(dir, 'cache');
  const { layout } = await source(path.join(dir, 'a'));
  const first = await convertImage(`oci:${layout}:v1`, `oci:${dir}/out1:x`, opts(dir, { cacheDir }));
  assert.equal(first.cacheHits, 0);
  const again = await convertImage(`oci:${layout}:v1`, `oci:${dir}/out2:x`, opts(dir, { cacheDir }));
  assert.deepEqual(again.layers.map((l) => l.cached), [true, true, true]);
  assert.equal(again.digest, first.digest);
  await assertNoLeftovers(dir, cacheDir);

  const other = await source(path.join(dir, 'b'), 'motd v2\n');
  const c = await convertImage(`oci:${other.layout}:v1`, `oci:${dir}/out3:x`, opts(dir, { cacheDir }));
  assert.deepEqual(c.layers.map((l) => l.cached), [true, true, false]);
  const raw = path.join(dir, 'c.raw');
  await exportLayout(`${dir}/out3`, 'x', raw);
  assertFsck(raw);
  assert.equal(catFile(raw, '/etc/motd').toString(), 'motd v2\n');

  // Two conversions sharing a fresh cache directory at once: both finish, with the same result.
  const shared = path.join(dir, 'shared-cache');
  const [x, y] = await Promise.all([1, 2].map((n) => convertImage(`oci:${layout}:v1`, `oci:${dir}/par${n}:x`, opts(dir, { cacheDir: shared }))));
  assert.equal(x!.digest, first.digest);
  assert.equal(y!.digest, first.digest);
  assert.equal((await readdir(path.join(shared, 'convert-v1'))).length, 3);

  // Other settings are other entries; a damaged blob is noticed and rebuilt.
  const zstd = await convertImage(`oci:${layout}:v1`, `oci:${dir}/out4:x`, opts(dir, { cacheDir, algorithm: 'zstd' }));
  assert.equal(zstd.cacheHits, 0);
  const entries = await readdir(path.join(cacheDir, 'convert-v1'));
  for (const e of entries) await truncate(path.join(cacheDir, 'convert-v1', e, 'layer.tar'), 100);
  const rebuilt = await convertImage(`oci:${layout}:v1`, `oci:${dir}/out5:x`, opts(dir, { cacheDir }));
  assert.equal(rebuilt.cacheHits, 0);
  assert.equal(rebuilt.digest, first.digest);
});

test('registries as source and destination; a second repository mounts the cached layers instead of uploading them', async (t) => {
  const dir = await tempDir(t);
  const reg = await startRegistry();
  t.after(() => reg.stop());
  const { layout } = await source(dir);
  await copyImage(`oci:${layout}:v1`, `${reg.host}/src/app:v1`);
  const cacheDir = path.join(dir, 'cache');
  const host = reg.host;
  const one = await convertImage(`${host}/src/app:v1`, `${host}/obd/one:v1`, opts(dir, { cacheDir }));
  assert.deepEqual(one.layers.map((l) => l.pushed), ['uploaded', 'uploaded', 'uploaded']);
  const two = await convertImage(`${host}/src/app:v1`, `${host}/obd/two:v1`, opts(dir, { cacheDir }));
  assert.deepEqual(two.layers.map((l) => [l.cached, l.pushed]), [[true, 'mounted'], [true, 'mounted'], [true, 'mounted']]);
  const again = await convertImage(`${host}/src/app:v1`, `${host}/obd/two:v2`, opts(dir, { cacheDir }));
  assert.deepEqual(again.layers.map((l) => l.pushed), ['exists', 'exists', 'exists']);
  assert.equal(two.digest, one.digest);

  // What the registry holds is the image: pulled back into a layout, it exports and checks.
  await copyImage(`${host}/obd/two:v1`, `oci:${dir}/pulled:v1`);
  const raw = path.join(dir, 'disk.raw');
  await exportLayout(`${dir}/pulled`, 'v1', raw);
  assertFsck(raw);
  assert.deepEqual(catFile(raw, '/usr/lib/big.bin'), BIG);
});

test('docker save output converts into a Docker v2 schema 2 overlaybd image', async (t) => {
  const dir = await tempDir(t);
  const layers = await buildLayers(dir);
  const file = path.join(dir, 'saved.tar');
  await writeDockerArchive(path.join(dir, 'stage'), file, [{ layers: [layers[0]!, layers[1]!], tags: ['app:v1'] }], true);
  const r = await convertImage(`docker-archive:${file}`, `oci-archive:${dir}/out.tar:v1`, opts(dir));
  const { repo, close } = await openRepository(parseReference(`oci-archive:${dir}/out.tar:v1`));
  try {
    const img = await resolveImage(repo, 'v1');
    assert.equal(img.digest, r.digest);
    assert.equal(img.raw.mediaType, 'application/vnd.docker.distribution.manifest.v2+json');
    assert.equal(img.manifest.config.mediaType, 'application/vnd.docker.container.image.v1+json');
    assert.deepEqual(img.manifest.layers.map((l) => l.mediaType), ['application/vnd.docker.image.rootfs.diff.tar', 'application/vnd.docker.image.rootfs.diff.tar']);
  } finally {
    await close();
  }
});

test('bad inputs fail with typed errors and leave no destination, work files or cache entries', async (t) => {
  const dir = await tempDir(t);
  const cacheDir = path.join(dir, 'cache');
  const layers = await buildLayers(dir);
  const [l0, l1] = layers;

  // A config whose diffID for layer 1 is wrong: found once the layer is read.
  const lying = path.join(dir, 'lying');
  const config = imageConfig([l0!, l1!]).toString().replace(l1!.diffId, sha256('not this layer'));
  await writeOciLayout(lying, [l0!, l1!], { config: Buffer.from(config) });
  await assert.rejects(convertImage(`oci:${lying}`, `oci:${dir}/o1`, opts(dir, { cacheDir })), (e: Error) => e instanceof DiffIdMismatchError && e.layer === 1 && e.message.includes(l1!.diffId));
  await assert.rejects(readdir(`${dir}/o1`), { code: 'ENOENT' });

  // A truncated layer (the manifest describes the truncated bytes, the config the whole tar).
  const cut = { ...l1!, blob: l1!.blob.subarray(0, l1!.blob.length - 40) };
  const truncated = path.join(dir, 'truncated');
  await writeOciLayout(truncated, [l0!, { ...cut, digest: sha256(cut.blob) }], { config: imageConfig([l0!, l1!]) });
  await assert.rejects(convertImage(`oci:${truncated}`, `oci:${dir}/o2`, opts(dir, { cacheDir })), ObdError);
  await assert.rejects(readdir(`${dir}/o2`), { code: 'ENOENT' });

  // A layer that is no tar (a Helm chart): refused before anything is converted.
  const chart = path.join(dir, 'chart');
  await writeOciLayout(chart, [{ ...l0!, mediaType: 'application/vnd.cncf.helm.chart.content.v1.tar+gzip' }]);
  await assert.rejects(convertImage(`oci:${chart}`, `oci:${dir}/o3`, opts(dir)), (e: Error) => e instanceof UnsupportedLayerError && /helm/.test(e.message));
  await assert.rejects(readdir(`${dir}/o3`), { code: 'ENOENT' });

  // The source as destination, a digest destination, a docker-archive destination.
  await assert.rejects(convertImage(`oci:${lying}`, `oci:${lying}`, opts(dir)), InvalidArgumentError);
  await assert.rejects(convertImage(`oci:${lying}`, `oci:${dir}/o4@${sha256('x')}`, opts(dir)), InvalidArgumentError);
  await assert.rejects(convertImage(`oci:${lying}`, `docker-archive:${dir}/o5.tar`, opts(dir)), InvalidArgumentError);
  await assert.rejects(convertImage(`oci:${lying}`, `oci:${dir}/o6`, opts(dir, { vsize: 1000 })), InvalidArgumentError);

  await assertNoLeftovers(dir, cacheDir);
  // Layer 0 converted fine before layer 1 failed: its entry stays, nothing else.
  assert.equal((await readdir(path.join(cacheDir, 'convert-v1'))).length, 1);
});

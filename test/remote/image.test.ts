/**
 * End to end through a real registry and OCI layouts: push the reference's LSMT fixture
 * layers, open the image lazily through the disk cache, stack it with the LSMT core and
 * compare the whole virtual disk with the reference's sha256; append one snapshot; pull
 * (interrupted, then resumed); copy to a layout and back; open config.v1.json with local
 * and remote lowers and a background download; record and replay a prefetch trace.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { ByteSource } from '../../src/io/types.ts';
import { openLayerSource } from '../../src/image/open.ts';
import { sha256Device } from '../../src/image/export.ts';
import { Stack } from '../../src/lsmt/stack.ts';
import { BlobCache } from '../../src/remote/cache.ts';
import { openImageSources } from '../../src/image/sources.ts';
import { openImageConfig } from '../../src/image/config.ts';
import { openRemoteImage } from '../../src/remote/image.ts';
import { Annotation } from '../../src/remote/manifest.ts';
import { copyImage } from '../../src/remote/pull.ts';
import { pullImage } from '../../src/image/pull.ts';
import { pushImage } from '../../src/image/push.ts';
import { decodeTrace, replayTrace, TraceRecorder, TracingSource } from '../../src/remote/trace.ts';
import { LazySource } from '../../src/remote/lazy-source.ts';
import { FIXTURES } from '../helpers/recipes.ts';
import { startRegistry, type RunningRegistry } from './helpers/registry.ts';
import { suiteTempDir, tempDir } from '../helpers/temp.ts';

const L = (n: number) => path.join(FIXTURES, 'lsmt', `layer${n}.lsmt`);
const SHA_123 = '2e934e7aadac27b164b562713673cdd0fd295e063f4edc6cf6fde77a54dcc967';
const SHA_12 = 'c1774986dbbbbad9617b3a65a0988cd07b8b39fc7f81f4ffa5bc49efe49d1e97';

async function stackOf(sources: ByteSource[]): Promise<Stack> {
  const layers = [];
  for (const s of sources) layers.push(await openLayerSource(s));
  return new Stack(layers);
}

describe('images through a registry', () => {
  let reg: RunningRegistry;
  let credsFile: string;
  let work: string;
  const tmp = suiteTempDir('obd-img-');
  before(async () => {
    reg = await startRegistry({ users: { alice: 'pw' } });
    work = tmp.path;
    credsFile = path.join(work, 'creds.json');
    await writeFile(credsFile, JSON.stringify({ auths: { [reg.host]: { username: 'alice', password: 'pw' } } }));
  });
  after(async () => {
    await reg.stop();
  });

  const opts = () => ({ credsFile, dockerConfig: false as const, retryBaseMs: 5 });

  test('push, lazy open, stack: the virtual disk matches the reference', async () => {
    const pushed = await pushImage([L(1), L(2)], `${reg.host}/team/img:v1`, { ...opts(), fsType: 'ext4' });
    assert.deepEqual(pushed.layers.map((l) => [l.kind, l.result]), [['lsmt', 'uploaded'], ['lsmt', 'uploaded']]);

    const v2 = await pushImage([L(3)], `${reg.host}/team/img:v1`, { ...opts(), append: true });
    assert.deepEqual(v2.layers.map((l) => l.result), ['exists', 'exists', 'uploaded'], 'appending uploads only the new layer');
    const again = await pushImage([L(1), L(2), L(3)], `${reg.host}/team/img:v3`, opts());
    assert.deepEqual(again.layers.map((l) => l.result), ['exists', 'exists', 'exists']);
    assert.deepEqual(again.layers.map((l) => l.digest), v2.layers.map((l) => l.digest), 'compression is deterministic: same blobs');

    const cacheDir = path.join(work, 'cache');
    const img = await openRemoteImage(`${reg.host}/team/img:v1`, { ...opts(), cacheDir });
    assert.equal(img.layers.length, 3);
    const ann = img.manifest.layers[0]!.annotations!;
    assert.equal(ann[Annotation.version], '0.1.0');
    assert.equal(ann[Annotation.blobDigest], img.manifest.layers[0]!.digest);
    assert.equal(ann[Annotation.blobSize], String(img.manifest.layers[0]!.size));
    assert.equal(ann[Annotation.fsType], 'ext4');
    assert.equal(img.manifest.layers[2]!.annotations![Annotation.fsType], undefined);
    const stack = await stackOf(img.layers);
    assert.equal(await sha256Device(stack), SHA_123);
    const fetched = img.lazy.reduce((a, l) => a + l.stats.requests, 0);
    await img.close();

    const warm = await openRemoteImage(`${reg.host}/team/img:v1`, { ...opts(), cacheDir });
    assert.equal(await sha256Device(await stackOf(warm.layers)), SHA_123);
    assert.equal(warm.lazy.reduce((a, l) => a + l.stats.requests, 0), 0, `warm cache: no fetches (cold took ${fetched})`);
    await warm.close();
  });

  test('pull: interrupted, then resumed; digests verified; config.v1.json serves', async (t) => {
    const dir = await tempDir(t);
    const ac = new AbortController();
    await assert.rejects(
      pullImage(`${reg.host}/team/img:v1`, dir, {
        ...opts(),
        concurrency: 1,
        signal: ac.signal,
        onProgress: (done) => {
          if (done > 300_000) ac.abort();
        },
      }),
    );
    let first = -1;
    // One blob at a time: the first report is deterministic (present blobs are hashed before they count).
    const r = await pullImage(`${reg.host}/team/img:v1`, dir, { ...opts(), concurrency: 1, onProgress: (d) => (first = first < 0 ? d : first) });
    assert.ok(first > 0, 'resumed with bytes already on disk');
    for (const l of r.layers) assert.equal('sha256:' + createHash('sha256').update(await readFile(l.file)).digest('hex'), l.digest);
    const cfg = await openImageConfig(r.configPath);
    assert.equal(await sha256Device(await stackOf(cfg.layers)), SHA_123);
    await cfg.close();
  });

  test('copy to an OCI layout and back, mount across repositories', async (t) => {
    const dir = await tempDir(t);
    const toLayout = await copyImage(`${reg.host}/team/img:v1`, `oci:${dir}/layout:saved`, opts());
    assert.ok(toLayout.blobs.every((b) => b.result === 'uploaded'));
    const local = await openRemoteImage(`oci:${dir}/layout:saved`);
    assert.equal(await sha256Device(await stackOf(local.layers)), SHA_123);
    await local.close();
    const back = await copyImage(`oci:${dir}/layout:saved`, `${reg.host}/other/img:v1`, { ...opts(), mountFrom: ['team/img'] });
    assert.ok(back.blobs.every((b) => b.result === 'mounted'), JSON.stringify(back.blobs.map((b) => b.result)));
    const same = await copyImage(`${reg.host}/team/img:v1`, `${reg.host}/third/img:v1`, opts());
    assert.ok(same.blobs.every((b) => b.result === 'mounted'), 'same registry mounts from the source repository');
  });

  test('config.v1.json: local + remote lowers, background download switches to the local file', async (t) => {
    const dir = await tempDir(t);
    const img = await openRemoteImage(`${reg.host}/team/img:v1`, opts());
    const [, l2, l3] = img.manifest.layers;
    await img.close();
    const config = {
      repoBlobUrl: `http://${reg.host}/v2/team/img/blobs`,
      lowers: [{ file: L(1) }, { digest: l2!.digest, size: l2!.size }, { digest: l3!.digest, dir: 'l3' }],
      upper: { index: 'rw/index', data: 'rw/data' },
      resultFile: 'result.txt',
      download: { enable: true, delay: 0, delayExtra: 0, maxMBps: 50 },
    };
    const cfgPath = path.join(dir, 'config.v1.json');
    await writeFile(cfgPath, JSON.stringify(config));
    await mkdir(path.join(dir, 'l3'));
    const cache = await BlobCache.open({ dir: path.join(dir, 'cache') });
    const opened = await openImageConfig(cfgPath, { ...opts(), cache });
    assert.deepEqual(opened.upper, { index: path.join(dir, 'rw/index'), data: path.join(dir, 'rw/data') });
    assert.equal(await sha256Device(await stackOf(opened.layers)), SHA_123);
    await opened.reportResult();
    assert.equal(await readFile(path.join(dir, 'result.txt'), 'utf8'), 'success');
    const dl = opened.startDownloads();
    assert.ok(dl);
    await dl.done;
    assert.equal((await stat(path.join(dir, 'l3', 'overlaybd.commit'))).size, l3!.size);
    const lazy3 = opened.layers[2] as LazySource;
    assert.ok(lazy3.isLocal);
    assert.equal(await sha256Device(await stackOf(opened.layers)), SHA_123);
    await opened.close();
    await cache.close();

    const reopened = await openImageConfig(cfgPath, opts());
    assert.ok(!(reopened.layers[2] instanceof LazySource), 'the downloaded layer is now a local file');
    await reopened.close();
  });

  test('openImageSources: a reference with a disk cache, background-filled and verified', async (t) => {
    const dir = await tempDir(t);
    const src = await openImageSources(`${reg.host}/team/img:v1`, { ...opts(), cacheDir: path.join(dir, 'cache') });
    assert.equal(src.layers.length, 3);
    const dl = src.startDownloads({ maxMBps: 100 });
    assert.ok(dl);
    await dl.done;
    for (const l of src.layers as LazySource[]) assert.ok(l.store.disk!.complete, `${l.name} complete`);
    assert.equal(await sha256Device(await stackOf(src.layers)), SHA_123);
    await src.close();
  });

  test('prefetch: a recorded trace replayed into a cold cache makes the same reads local', async (t) => {
    const dir = await tempDir(t);
    const rec = new TraceRecorder();
    const img = await openRemoteImage(`${reg.host}/team/img:v1`, opts());
    const traced = img.layers.map((s, i) => new TracingSource(s, i, rec));
    const stack = await stackOf(traced);
    const buf = new Uint8Array(256 * 1024);
    for (const off of [0, 8 << 20, 33 << 20]) await stack.read(buf, off);
    await img.close();
    const file = path.join(dir, 'trace');
    await writeFile(file, rec.encode());
    const records = decodeTrace(await readFile(file), file);
    assert.equal(records.length, rec.records.length);

    const cold = await openRemoteImage(`${reg.host}/team/img:v1`, { ...opts(), cacheDir: path.join(dir, 'cache') });
    const res = await replayTrace(records, cold.layers, { concurrency: 4 });
    assert.equal(res.failed, 0);
    const before = cold.lazy.reduce((a, l) => a + l.stats.requests, 0);
    assert.ok(before > 0);
    const again = await stackOf(cold.layers);
    for (const off of [0, 8 << 20, 33 << 20]) await again.read(buf, off);
    assert.equal(cold.lazy.reduce((a, l) => a + l.stats.requests, 0), before, 'replayed reads need no more fetches');
    await cold.close();
  });
});

test('OCI layout as the embedded target: push, open, stack, with no registry', async (t) => {
  const dir = await tempDir(t);
  const ref = `oci:${dir}/img:v1`;
  await pushImage([L(1), path.join(FIXTURES, 'lsmt', 'layer1.lz4bs4.zfile')], `oci:${dir}/img:z`);
  const pushed = await pushImage([L(1), L(2)], ref);
  assert.equal(pushed.layers[0]!.result, 'exists', 'layer1 blob is shared within the layout');
  const img = await openRemoteImage(ref);
  assert.equal(await sha256Device(await stackOf(img.layers)), SHA_12);
  await img.close();
  const z = await openRemoteImage(`oci:${dir}/img:z`);
  const wrapped = await openLayerSource(z.layers[1]!);
  assert.deepEqual(wrapped.wrapping, ['tar', 'zfile', 'lsmt'], 'a bare zfile is pushed tar-wrapped');
  await z.close();
  const pulled = await pullImage(ref, path.join(dir, 'pulled'));
  const cfg = await openImageSources(pulled.configPath);
  assert.equal(cfg.name, pulled.configPath);
  assert.equal(await sha256Device(await stackOf(cfg.layers)), SHA_12);
  await cfg.close();
});

/**
 * Verified images through a real docker-registry (docs/format.md §7): push publishes trees,
 * a byte damaged in the registry's own storage fails only its range (typed, nothing cached)
 * and heals once restored; a poisoning proxy (flips, truncation, another blob's bytes with a
 * 206) never gets a wrong byte through; cache files damaged between runs are dropped and
 * refetched; the reference fixtures gain trees with addVerity and read verified;
 * --require-verity refuses an image without trees.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32c } from '@node-rs/crc32';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { ByteSource } from '../../src/io/types.ts';
import { openLayerSource } from '../../src/image/open.ts';
import { sha256Device } from '../../src/image/export.ts';
import { Stack } from '../../src/lsmt/stack.ts';
import { openRemoteImage, type RemoteImage } from '../../src/remote/image.ts';
import { isIndex, parseIndex } from '../../src/remote/manifest.ts';
import { copyImage } from '../../src/remote/pull.ts';
import { pullImage } from '../../src/image/pull.ts';
import { pushImage } from '../../src/image/push.ts';
import { RegistryClient } from '../../src/remote/registry.ts';
import { layerVerity, VerityAnnotation, VerityMediaType } from '../../src/verity/annotations.ts';
import { addVerity } from '../../src/verity/add.ts';
import { VerityError, VerityMissingError } from '../../src/verity/errors.ts';
import { VerifyingSource, VerifiedStore } from '../../src/verity/source.ts';
import { TreeShape } from '../../src/verity/tree.ts';
import { FIXTURES } from '../helpers/recipes.ts';
import { startRegistry, type RunningRegistry } from '../remote/helpers/registry.ts';
import { startFaultProxy, type FaultProxy } from '../remote/helpers/fault-proxy.ts';
import { tempDir } from '../helpers/temp.ts';

const L = (n: number) => path.join(FIXTURES, 'lsmt', `layer${n}.lsmt`);
const SHA_123 = '2e934e7aadac27b164b562713673cdd0fd295e063f4edc6cf6fde77a54dcc967';
const opts = { dockerConfig: false as const, retryBaseMs: 5 };

async function stackOf(sources: ByteSource[]): Promise<Stack> {
  const layers = [];
  for (const s of sources) layers.push(await openLayerSource(s));
  return new Stack(layers);
}

async function readRange(src: ByteSource, offset: number, length: number): Promise<Buffer> {
  const b = Buffer.alloc(length);
  assert.equal(await src.read(b, offset), length);
  return b;
}

/** Stored bytes of a blob in the registry's filesystem storage. */
const storedBlob = (reg: RunningRegistry, digest: string) => path.join(reg.dir, 'data', 'docker', 'registry', 'v2', 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7), 'data');

describe('verified images on a registry', () => {
  let reg: RunningRegistry;
  let proxy: FaultProxy;
  let ref: string;
  let layer0: { digest: string; size: number; bytes: Buffer };
  before(async () => {
    reg = await startRegistry();
    proxy = await startFaultProxy({ host: '127.0.0.1', port: reg.port });
    ref = `${reg.host}/v/img:v1`;
    await pushImage([L(1), L(2), L(3)], ref, opts);
    const img = await openRemoteImage(ref, opts);
    const d = img.manifest.layers[0]!;
    layer0 = { digest: d.digest, size: d.size, bytes: await readFile(storedBlob(reg, d.digest)) };
    await img.close();
  });
  after(async () => {
    await proxy.stop();
    await reg.stop();
  });

  test('push publishes a tree per layer: annotations, tree blob ≤ 0.1 %, referrer in the referrers tag index', async () => {
    const img = await openRemoteImage(ref, opts);
    try {
      for (const d of img.manifest.layers) {
        const v = layerVerity(d, 'test')!;
        assert.ok(v, `layer ${d.digest} has a tree`);
        assert.equal(d.annotations![VerityAnnotation.chunk], String(128 * 1024));
        assert.equal(v.treeSize, new TreeShape(d.size, v.chunk).bytes);
        assert.ok(v.treeSize / d.size <= 0.001, `tree ${v.treeSize} bytes for a ${d.size}-byte blob`);
        assert.equal(await img.repo.statBlob(v.tree), v.treeSize);
      }
      for (const l of img.lazy) assert.ok(l.remote instanceof VerifyingSource);
      const refs = await img.repo.getManifest(img.digest.replace(':', '-'));
      assert.ok(isIndex(refs));
      const entry = parseIndex(refs, 'test').manifests[0] as { digest: string; artifactType?: string };
      assert.equal(entry.artifactType, VerityMediaType.artifact);
      const artifact = JSON.parse(Buffer.from((await img.repo.getManifest(entry.digest)).bytes).toString()) as { subject: { digest: string }; layers: unknown[] };
      assert.equal(artifact.subject.digest, img.digest);
      assert.equal(artifact.layers.length, 3);
      assert.equal(await sha256Device(await stackOf(img.layers)), SHA_123);
    } finally {
      await img.close();
    }
  });

  test('one byte damaged in the registry storage: that range fails typed, others read, nothing damaged cached, heals after restore', async (t) => {
    const cacheDir = await tempDir(t);
    const at = 600_000;
    const file = storedBlob(reg, layer0.digest);
    const damaged = Buffer.from(layer0.bytes);
    damaged[at]! ^= 0x01;
    await writeFile(file, damaged);
    let img: RemoteImage | undefined;
    try {
      img = await openRemoteImage(ref, { ...opts, cacheDir });
      const lazy = img.lazy[0]!;
      const chunk = 128 * 1024;
      await assert.rejects(readRange(lazy, at - 10, 20), (e: unknown) => e instanceof VerityError && e.errno === 'EIO' && e.offset === Math.floor(at / chunk) * chunk && e.message.includes(layer0.digest));
      assert.deepEqual(await readRange(lazy, 0, 4096), layer0.bytes.subarray(0, 4096));
      assert.deepEqual(await readRange(lazy, layer0.size - 5000, 5000), layer0.bytes.subarray(layer0.size - 5000));
      await lazy.settle();
      const entry = lazy.store.disk!;
      assert.equal(entry.has(Math.floor(at / lazy.unit)), false, 'the damaged unit is not in the cache');
      const held = await readFile(entry.dataPath);
      for (let u = 0; u < entry.units; u++) if (entry.has(u)) assert.ok(held.subarray(u * lazy.unit, (u + 1) * lazy.unit).equals(layer0.bytes.subarray(u * lazy.unit, (u + 1) * lazy.unit)), `cached unit ${u} is exact`);
      await writeFile(file, layer0.bytes);
      assert.deepEqual(await readRange(lazy, at - 10, 20), layer0.bytes.subarray(at - 10, at + 10), 'the same open image reads the restored range');
      assert.equal(await sha256Device(await stackOf(img.layers)), SHA_123);
    } finally {
      await writeFile(file, layer0.bytes);
      await img?.close();
    }
  });

  for (const kind of ['corrupt', 'truncate', 'swap'] as const) {
    test(`a poisoning proxy (${kind}): reads are exact, retried around the proxy`, async () => {
      const img0 = await openRemoteImage(ref, opts);
      const other = img0.manifest.layers[1]!;
      await img0.close();
      let hits = 0;
      proxy.rule = (r) => {
        if (r.method !== 'GET' || !r.url.includes(`/blobs/${layer0.digest}`)) return undefined;
        hits++;
        if (kind === 'swap') return { kind: 'swap', path: r.url.replace(layer0.digest, other.digest), total: layer0.size };
        return { kind };
      };
      const img = await openRemoteImage(ref, { ...opts, proxy: `http://${proxy.host}` });
      try {
        assert.deepEqual(await readRange(img.lazy[0]!, 100_000, 300_000), layer0.bytes.subarray(100_000, 400_000));
        assert.ok(hits > 0, 'reads went through the proxy');
        const stats = (img.lazy[0]!.remote as VerifyingSource).stats;
        assert.ok(kind === 'truncate' ? stats.fallbacks > 0 : stats.refetches > 0, 'the poisoned fetches were made again without the proxy');
        assert.equal(await sha256Device(await stackOf(img.layers)), SHA_123);
      } finally {
        proxy.rule = () => undefined;
        await img.close();
      }
    });
  }

  test('cache files damaged between runs (even with their CRCs forged) are dropped and refetched', async (t) => {
    const cacheDir = await tempDir(t);
    const first = await openRemoteImage(ref, { ...opts, cacheDir });
    await readRange(first.lazy[0]!, 0, layer0.size);
    await first.lazy[0]!.settle();
    const entry = first.lazy[0]!.store.disk!;
    const base = entry.dataPath.slice(0, -'.data'.length);
    const unit = first.lazy[0]!.unit;
    await first.close();
    // Flip a byte of unit 1 and rewrite its CRC (and the metadata's own) so only the tree can tell.
    const data = await readFile(base + '.data');
    data[unit + 5000]! ^= 0x10;
    await writeFile(base + '.data', data);
    const meta = await readFile(base + '.meta');
    const units = Math.ceil(layer0.size / unit);
    const crcAt = 40 + Math.ceil(units / 8) + 4;
    meta.writeUInt32LE(crc32c(data.subarray(unit, 2 * unit)), crcAt);
    meta.writeUInt32LE(0, 28);
    meta.writeUInt32LE(crc32c(meta), 28);
    await writeFile(base + '.meta', meta);

    const again = await openRemoteImage(ref, { ...opts, cacheDir });
    try {
      const lazy = again.lazy[0]!;
      assert.deepEqual(await readRange(lazy, unit + 4000, 2000), layer0.bytes.subarray(unit + 4000, unit + 6000));
      assert.equal((lazy.store as VerifiedStore).stats.dropped, 1, 'the tree caught what the CRC did not');
      assert.equal(lazy.stats.requests, 1);
      assert.deepEqual(await readRange(lazy, 0, layer0.size), layer0.bytes, 'every other unit came from the cache, exact');
      assert.equal(lazy.stats.requests, 1);
    } finally {
      await again.close();
    }
    // A cache whose metadata is lost or garbage does not stop the image from opening.
    await writeFile(base + '.meta', Buffer.from('garbage'));
    const third = await openRemoteImage(ref, { ...opts, cacheDir });
    try {
      assert.equal(await sha256Device(await stackOf(third.layers)), SHA_123);
    } finally {
      await third.close();
    }
  });

  test('reference fixtures pushed without trees: --require-verity refuses, addVerity adds trees without new layer blobs, reads verified', async (t) => {
    const plain = `${reg.host}/v/plain:v1`;
    const pushed = await pushImage([L(1), L(2), L(3)], plain, { ...opts, verity: false });
    await assert.rejects(openRemoteImage(plain, { ...opts, requireVerity: true }), VerityMissingError);
    const added = await addVerity(plain, opts);
    assert.notEqual(added.digest, pushed.digest);
    assert.deepEqual(added.layers.map((l) => [l.digest, l.added]), pushed.layers.map((l) => [l.digest, true]));
    const img = await openRemoteImage(plain, { ...opts, requireVerity: true, cacheDir: await tempDir(t) });
    try {
      assert.equal(img.digest, added.digest);
      assert.deepEqual(img.manifest.layers.map((l) => l.digest), pushed.layers.map((l) => l.digest), 'the layer blobs are the same');
      for (const l of img.lazy) assert.ok(l.remote instanceof VerifyingSource);
      assert.equal(await sha256Device(await stackOf(img.layers)), SHA_123);
    } finally {
      await img.close();
    }
    assert.equal((await addVerity(plain, opts)).digest, added.digest, 'adding again changes nothing');
    // A copy carries the trees along and opens verified at its new place.
    await copyImage(plain, `${reg.host}/v/copied:v1`, opts);
    const copy = await openRemoteImage(`${reg.host}/v/copied:v1`, { ...opts, requireVerity: true });
    try {
      assert.equal(await sha256Device(await stackOf(copy.layers)), SHA_123);
    } finally {
      await copy.close();
    }
  });

  test('pull checks present blobs by digest: a damaged one of the right size is replaced', async (t) => {
    const dir = await tempDir(t);
    const first = await pullImage(ref, dir, opts);
    const victim = first.layers[0]!;
    const bytes = await readFile(victim.file);
    bytes[1000]! ^= 1;
    await writeFile(victim.file, bytes);
    const again = await pullImage(ref, dir, opts);
    assert.deepEqual(again.layers.map((l) => l.fetched), [true, false, false]);
    assert.deepEqual(await readFile(victim.file), layer0.bytes);
  });

  /** Copies the image's manifest (edited by `edit`) and layers, not its tree blobs, to `repo`:v1, as skopeo copies. */
  async function copyBare(repo: string, edit: (m: { layers: { annotations?: Record<string, string> }[] }) => void = () => {}): Promise<void> {
    const src = await openRemoteImage(ref, opts);
    const c = new RegistryClient(reg.host, { retryBaseMs: 5 });
    try {
      const dst = c.repository(repo);
      for (const d of [src.manifest.config, ...src.manifest.layers]) assert.equal(await dst.putBlob(d.digest, await src.repo.openBlob(d.digest, d.size), { mountFrom: ['v/img'] }), 'mounted');
      const raw = await src.repo.getManifest(src.digest);
      const doc = JSON.parse(Buffer.from(raw.bytes).toString('utf8'));
      edit(doc);
      await dst.putManifest(Buffer.from(JSON.stringify(doc)), raw.mediaType, 'v1');
    } finally {
      await src.close();
      await c.close();
    }
  }

  test('small trees travel inline in the manifest: opening needs no tree request, and a copy without the tree blobs still reads verified', async () => {
    await copyBare('v/inline');
    const img = await openRemoteImage(`${reg.host}/v/inline:v1`, opts);
    try {
      for (const d of img.manifest.layers) assert.ok(layerVerity(d, 'test')?.inline, `${d.digest} carries its tree inline`);
      const stack = await stackOf(img.layers);
      assert.equal(await sha256Device(stack), SHA_123);
    } finally {
      await img.close();
    }
  });

  test('an inline tree that is not the named tree is refused', async () => {
    const img = await openRemoteImage(ref, opts);
    const d = img.manifest.layers[0]!;
    await img.close();
    const a = { ...d.annotations };
    a[VerityAnnotation.treeInline] = Buffer.from('not the tree').toString('base64');
    assert.throws(() => layerVerity({ ...d, annotations: a }, 'test'), (e: unknown) => e instanceof VerityMissingError && /inline verity tree is not/.test(e.message));
  });

  test('an image copied without its trees (manifest and layers only, as skopeo copies) is refused with what to do', async () => {
    // Trees too large to travel inline are only in their blobs.
    await copyBare('v/bare', (m) => {
      for (const l of m.layers) delete l.annotations?.[VerityAnnotation.treeInline];
    });
    const bare = await openRemoteImage(`${reg.host}/v/bare:v1`, opts);
    try {
      await assert.rejects(readRange(bare.lazy[0]!, 0, 512), (e: unknown) => e instanceof VerityMissingError && /verity tree is missing.*obd copy/.test(e.message));
    } finally {
      await bare.close();
    }
  });

  test('a manifest by tag that does not hash to the digest the registry names is refused', async () => {
    let seen = false;
    proxy.rule = (r) => (r.url.includes('/manifests/v1') && !seen ? ((seen = true), { kind: 'corrupt' }) : undefined);
    const c = new RegistryClient(proxy.host, { plainHttp: true, retries: 0 });
    try {
      await assert.rejects(c.repository('v/img').getManifest('v1'), /digest mismatch/);
    } finally {
      proxy.rule = () => undefined;
      await c.close();
    }
  });
});

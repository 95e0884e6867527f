/**
 * The verity tree (docs/format.md §7): its shape and hashes by hand, paged verification
 * over one, two and three page levels, a lying source healed by the retry source or failing
 * with a typed error, and a store whose held unit was damaged on disk.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { MemorySource } from '../../src/io/memory.ts';
import type { ByteSource } from '../../src/io/types.ts';
import { LazySource, MemoryChunkStore } from '../../src/remote/lazy-source.ts';
import { BlobCache } from '../../src/remote/cache.ts';
import { VerityError } from '../../src/verity/errors.ts';
import { digestAndTree } from '../../src/verity/publish.ts';
import { VerifiedStore, VerifyingSource } from '../../src/verity/source.ts';
import { TreeBuilder, TreeShape } from '../../src/verity/tree.ts';
import { TreeVerifier } from '../../src/verity/verifier.ts';
import { R } from '../helpers/recipes.ts';
import { tempDir } from '../helpers/temp.ts';

const sha = (...parts: Uint8Array[]) => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};

function treeOf(bytes: Uint8Array, chunk: number) {
  const b = new TreeBuilder(chunk, bytes.length);
  b.update(bytes);
  return b.finish();
}

/** A source that returns wrong bytes for its first `lies` reads touching `at`. */
class LyingSource extends MemorySource {
  lies: number;
  readonly at: number;
  reads = 0;
  constructor(bytes: Uint8Array, at: number, lies: number, name = 'liar') {
    super(bytes, name);
    this.at = at;
    this.lies = lies;
  }
  override tryReadSync(): undefined {
    return undefined;
  }
  override async read(buf: Uint8Array, offset: number): Promise<number> {
    this.reads++;
    const n = await super.read(buf, offset);
    if (this.lies > 0 && this.at >= offset && this.at < offset + n) {
      this.lies--;
      buf[this.at - offset]! ^= 0x40;
    }
    return n;
  }
}

test('shape and hashes: three chunks, leaves and nodes domain-separated, a lone node carried', () => {
  const chunk = 4096;
  const data = R('verity-3', 2 * chunk + 100);
  const { tree, root, shape } = treeOf(data, chunk);
  assert.deepEqual(shape.counts, [3, 2, 1]);
  assert.equal(tree.length, 6 * 32);
  const l = [0, 1, 2].map((i) => sha(Buffer.from([0]), data.subarray(i * chunk, Math.min(data.length, (i + 1) * chunk))));
  const n0 = sha(Buffer.from([1]), l[0]!, l[1]!);
  const expectRoot = sha(Buffer.from([1]), n0, l[2]!);
  assert.deepEqual(Buffer.from(root), expectRoot);
  assert.deepEqual(Buffer.from(tree.subarray(0, 96)), Buffer.concat(l));
  assert.deepEqual(Buffer.from(tree.subarray(96, 160)), Buffer.concat([n0, l[2]!]));
  // Empty blob: one leaf, the hash of no bytes.
  assert.deepEqual(Buffer.from(treeOf(new Uint8Array(0), chunk).root), sha(Buffer.from([0])));
  // The tree is ~2·32 bytes per chunk: at the default 128 KiB, 0.05 % of the blob.
  assert.ok(new TreeShape(2 ** 30, 128 * 1024).bytes / 2 ** 30 < 0.0005);
});

for (const [label, size, chunk, groups] of [
  ['one page level', 100 * 4096 + 7, 4096, 1],
  ['two page levels', 3000 * 4096 + 1, 4096, 2],
  ['three page levels', 16500 * 4096, 4096, 3],
] as const) {
  test(`verifier over ${label}: reads check, a flipped byte is caught, few pages fetched`, async () => {
    const data = new Uint8Array(size);
    for (let i = 0; i < size; i += 4093) data[i] = i & 0xff;
    const { tree, root, shape } = treeOf(data, chunk);
    assert.equal(shape.pageGroups, groups);
    const v = new TreeVerifier({ root, chunk, size }, new MemorySource(tree, 'tree'));
    const last = shape.leaves - 1;
    assert.equal(await v.check(data.subarray(last * chunk), last), -1);
    assert.equal(v.stats.pageFetches, groups, 'one page per level for the first read');
    assert.equal(await v.check(data.subarray(5 * chunk, 9 * chunk), 5), -1);
    const bad = data.slice(5 * chunk, 9 * chunk);
    bad[2 * chunk + 17]! ^= 1;
    assert.equal(await v.check(bad, 5), 7);
    // A wrong tree (one node flipped) is refused against the root.
    const wrong = tree.slice();
    wrong[32 * 5]! ^= 1;
    const w = new TreeVerifier({ root, chunk, size }, new MemorySource(wrong, 'bad tree'));
    await assert.rejects(w.check(data.subarray(5 * chunk, 6 * chunk), 5), (e: unknown) => e instanceof VerityError && /tree page 0\/0/.test(e.message));
  });
}

test('a lying source is healed by the retry source; without one it fails with a typed error, the lazy source keeps nothing', async () => {
  const size = 1_000_000;
  const data = R('verity-lie', size);
  const { tree, root } = treeOf(data, 65536);
  const params = { root, chunk: 65536, size };
  const target = 300_000;

  const liar = new LyingSource(data, target, 100);
  const good = new LyingSource(data, target, 0, 'direct');
  const vs = new VerifyingSource(liar, new TreeVerifier(params, new MemorySource(tree, 'tree')), { retry: good });
  const lazy = new LazySource(vs, { unit: 262144 });
  const out = new Uint8Array(5000);
  assert.equal(await lazy.read(out, target - 100), 5000);
  assert.deepEqual(Buffer.from(out), data.subarray(target - 100, target + 4900));
  assert.equal(vs.stats.refetches, 1);
  assert.ok(good.reads >= 1);

  const liar2 = new LyingSource(data, target, 100);
  const store = new MemoryChunkStore(262144, 1 << 24);
  const lazy2 = new LazySource(new VerifyingSource(liar2, new TreeVerifier(params, new MemorySource(tree, 'tree')), { attempts: 3 }), { store });
  await assert.rejects(lazy2.read(out, target), (e: unknown) => e instanceof VerityError && e.offset === Math.floor(target / 65536) * 65536 && e.sources.length === 3 && e.message.includes('liar'));
  await lazy2.settle();
  assert.equal(store.has(1), false, 'the failed unit was not kept');
  // Other ranges still read, and correctly.
  assert.equal(await lazy2.read(out, 600_000), 5000);
  assert.deepEqual(Buffer.from(out), data.subarray(600_000, 605_000));
  // Unaligned reads straight on the verifying source.
  const direct = new VerifyingSource(new MemorySource(data), new TreeVerifier(params, new MemorySource(tree, 'tree')));
  assert.equal(await direct.read(out, size - 3000), 3000);
  assert.deepEqual(Buffer.from(out.subarray(0, 3000)), data.subarray(size - 3000));
  assert.equal(direct.tryReadSync(), undefined, 'no synchronous path around the check');
});

test('a held unit damaged in the store is dropped on first use and fetched again; checked units read synchronously', async () => {
  const size = 800_000;
  const data = R('verity-store', size);
  const { tree, root } = treeOf(data, 131072);
  const verifier = new TreeVerifier({ root, chunk: 131072, size }, new MemorySource(tree, 'tree'));
  const inner = new MemoryChunkStore(262144, 1 << 24);
  const damaged = data.slice(262144, 524288);
  damaged[1000]! ^= 0xff;
  await inner.put(1, damaged);
  await inner.put(2, data.slice(524288, 786432));
  const store = new VerifiedStore(inner, verifier);
  const remote: ByteSource = new MemorySource(data, 'origin');
  const lazy = new LazySource(remote, { store });
  const out = new Uint8Array(4096);
  assert.equal(lazy.tryReadSync(out, 262144), undefined, 'an unchecked unit is not served synchronously');
  assert.equal(await lazy.read(out, 262144), 4096);
  assert.deepEqual(Buffer.from(out), data.subarray(262144, 262144 + 4096));
  assert.equal(store.stats.dropped, 1);
  assert.equal(lazy.stats.requests, 1, 'the damaged unit was fetched again');
  await lazy.settle();
  assert.equal(lazy.tryReadSync(out, 262144 + 8192), 4096, 'the refetched unit is served synchronously');
  assert.equal(await lazy.read(out, 524288), 4096);
  assert.deepEqual(Buffer.from(out), data.subarray(524288, 524288 + 4096));
  assert.equal(store.stats.checked, 2);
  assert.equal(lazy.tryReadSync(out, 524288), 4096);
});

test('a cache entry shared with an unverified reader: a unit it forgot and stored again is checked again', async (t) => {
  const dir = await tempDir(t, 'obd-verity-shared-');
  const size = 800_000;
  const data = R('verity-shared', size);
  const { tree, root } = treeOf(data, 131072);
  const cache = await BlobCache.open({ dir });
  const key = 'sha256:' + createHash('sha256').update(data).digest('hex');
  const verified = new VerifiedStore(await cache.entry(key, size), new TreeVerifier({ root, chunk: 131072, size }, new MemorySource(tree, 'tree')));
  const a = new LazySource(new MemorySource(data, 'honest'), { store: verified });
  const b = new LazySource(new LyingSource(data, 300_000, 100, 'liar'), { store: await cache.entry(key, size) });
  const out = new Uint8Array(1000);
  await a.read(out, 299_500);
  await a.settle();
  assert.equal(a.tryReadSync(out, 299_500), 1000, 'checked, served synchronously');
  await b.evict(262144, 1);
  await b.read(out, 299_500);
  await b.settle();
  assert.notDeepEqual(Buffer.from(out), data.subarray(299_500, 300_500), 'the unverified reader stored the lie');
  assert.equal(a.tryReadSync(out, 299_500), undefined, 'the stored-again unit is not served unchecked');
  assert.equal(await a.read(out, 299_500), 1000);
  assert.deepEqual(Buffer.from(out), data.subarray(299_500, 300_500));
  assert.equal(verified.stats.dropped, 1);
  await a.close();
  await b.close();
  await cache.close();
});

test('digestAndTree: one pass gives the sha256 and the same tree as the builder', async () => {
  const data = R('verity-dt', 3 << 20);
  const { digest, tree } = await digestAndTree(new MemorySource(data), 131072);
  assert.equal(digest, 'sha256:' + createHash('sha256').update(data).digest('hex'));
  assert.deepEqual(Buffer.from(tree!.bytes), Buffer.from(treeOf(data, 131072).tree));
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { FileSource } from '../../src/io/file.ts';
import { openSealedLayer } from '../../src/lsmt/sealed.ts';
import { Stack } from '../../src/lsmt/stack.ts';
import { openStack } from '../../src/image/open.ts';
import { DIGESTS, FIXTURES } from '../helpers/recipes.ts';
import { deviceDigest } from '../helpers/layers.ts';

const L = (n: string) => path.join(FIXTURES, 'lsmt', n);

const cases: [string, string[], string][] = [
  ['layer1 alone', ['layer1.lsmt'], DIGESTS.layer1],
  ['layer1 + layer2', ['layer1.lsmt', 'layer2.lsmt'], DIGESTS.layer12],
  ['layer1 + layer2 + layer3', ['layer1.lsmt', 'layer2.lsmt', 'layer3.lsmt'], DIGESTS.layer123],
  ['layer1 zfile-compressed', ['layer1.lz4bs4.zfile'], DIGESTS.layer1],
  ['layer1 zfile + layer2 + layer3', ['layer1.lz4bs4.zfile', 'layer2.lsmt', 'layer3.lsmt'], DIGESTS.layer123],
  ['layer2 alone', ['layer2.lsmt'], DIGESTS.layer2alone],
  ['layer3 alone', ['layer3.lsmt'], DIGESTS.layer3alone],
];

for (const [name, files, digest] of cases) {
  test(`fixture stack ${name} reads with the manifest sha256`, async () => {
    const stack = await openStack(files.map(L), { verifyChain: true });
    try {
      assert.equal(stack.size, 67108864);
      assert.equal(await deviceDigest(stack), digest);
      // Odd read sizes and unaligned offsets must see the same bytes.
      assert.equal(await deviceDigest(stack, 3 * 4096 + 512), digest);
    } finally {
      await stack.close();
    }
  });
}

test('unaligned reads equal the aligned bytes', async () => {
  const stack = await openStack(['layer1.lsmt', 'layer2.lsmt', 'layer3.lsmt'].map(L));
  try {
    const whole = new Uint8Array(stack.size);
    await stack.read(whole, 0);
    let seed = 7;
    const rnd = (n: number) => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n);
    for (let i = 0; i < 500; i++) {
      const off = rnd(stack.size - 1);
      const len = 1 + rnd(Math.min(300000, stack.size - off));
      const buf = new Uint8Array(len);
      await stack.read(buf, off);
      assert.deepEqual(Buffer.from(buf), Buffer.from(whole.subarray(off, off + len)), `read [${off}, +${len})`);
    }
  } finally {
    await stack.close();
  }
});

for (const n of ['layer1.lsmt', 'layer2.lsmt']) {
  test(`${n}: parsed index equals the ${n}.index.tsv dump`, async () => {
    const layer = await openSealedLayer(await FileSource.open(L(n)));
    try {
      const tsv = (await readFile(L(`${n}.index.tsv`), 'utf8'))
        .split('\n')
        .filter((l) => l && !l.startsWith('#'))
        .map((l) => l.split('\t').map(Number));
      const got = layer.index.toArray().map((m) => [m.offset, m.length, m.moffset, m.zeroed ? 1 : 0, m.tag]);
      assert.deepEqual(got, tsv);
    } finally {
      await layer.source.close();
    }
  });
}

test('header and trailer fields equal headers.json', async () => {
  const expected = JSON.parse(await readFile(path.join(FIXTURES, 'headers.json'), 'utf8'));
  for (const n of ['layer1.lsmt', 'layer2.lsmt', 'layer3.lsmt']) {
    const layer = await openSealedLayer(await FileSource.open(L(n)));
    try {
      for (const [which, ht] of [['header', layer.header], ['trailer', layer.trailer]] as const) {
        const e = expected[n][which];
        assert.equal(ht.flags, e.flags, `${n} ${which} flags`);
        assert.equal(ht.indexOffset, e.index_offset, `${n} ${which} index_offset`);
        assert.equal(ht.indexSize, e.index_size, `${n} ${which} index_size`);
        assert.equal(ht.virtualSize, e.virtual_size, `${n} ${which} virtual_size`);
        assert.equal(ht.uuid, e.uuid);
        assert.equal(ht.parentUuid, e.parent_uuid);
        assert.equal(`${ht.version}`, `${e.version}`);
        assert.equal(ht.subVersion, e.sub_version);
        assert.equal(ht.userTag, e.user_tag);
      }
    } finally {
      await layer.source.close();
    }
  }
});

test('stack extents match reads: holes and zero extents read as zeros', async () => {
  const stack = await openStack(['layer1.lsmt', 'layer2.lsmt', 'layer3.lsmt'].map(L));
  try {
    const exts = await stack.extents(0, stack.size);
    let pos = 0;
    for (const e of exts) {
      assert.equal(e.offset, pos);
      pos += e.length;
      if (e.kind !== 'data') {
        const buf = new Uint8Array(e.length);
        buf.fill(1);
        await stack.read(buf, e.offset);
        assert.ok(buf.every((b) => b === 0), `${e.kind} extent at ${e.offset} reads zeros`);
        assert.equal(e.layer, e.kind === 'hole' ? -1 : e.layer);
      } else {
        assert.ok(e.layer >= 0 && e.layer < 3);
      }
    }
    assert.equal(pos, stack.size);
    const kinds = new Set(exts.map((e) => e.kind));
    assert.deepEqual([...kinds].sort(), ['data', 'hole', 'zero']);
  } finally {
    await stack.close();
  }
  const two = await openStack(['layer1.lsmt', 'layer2.lsmt'].map(L));
  try {
    // layer2 trims [0, 32768): a zero extent from layer index 1 hides layer1's text.
    assert.deepEqual((await two.extents(0, 65536))[0], { offset: 0, length: 32768, kind: 'zero', layer: 1 });
  } finally {
    await two.close();
  }
});

test('a stack with a parent mismatch is refused when the chain is verified', async () => {
  await assert.rejects(openStack([L('layer1.lsmt'), L('layer3.lsmt')], { verifyChain: true }), {
    name: 'ChainError',
    message: /parent uuid A2A2A2A2-0000-4000-8000-000000000002 does not match the uuid A1A1A1A1/,
  });
  await assert.rejects(openStack([L('layer2.lsmt'), L('layer1.lsmt')], { verifyChain: true }), /has no parent uuid/);
  const unchecked = await openStack([L('layer1.lsmt'), L('layer3.lsmt')]);
  await unchecked.close();
});

test('reads outside the virtual size are refused', async () => {
  const stack = new Stack([await openSealedLayer(await FileSource.open(L('layer1.lsmt')))]);
  try {
    await assert.rejects(stack.read(new Uint8Array(4096), stack.size - 512), { name: 'OutOfRangeError' });
    await assert.rejects(stack.extents(stack.size, 1), { name: 'OutOfRangeError' });
  } finally {
    await stack.close();
  }
});

/**
 * applyLayer onto the real engine (src/ext4 Ext4 on a sparse image file): every behaviour of
 * apply-cases.ts and random layer stacks must give exactly the TreeModel's tree, with
 * `e2fsck -fn` clean after every layer: through fuse2fs (contents by sha256, modes, owners,
 * hard link groups, xattrs and ACLs, symlink targets, device numbers; mtimes to the second,
 * all fuse2fs shows) and through the engine's own readdir/stat (mtimes to the nanosecond,
 * link counts of directories too). The first layer formats the filesystem, each later one
 * reopens it (as the convert pipeline does, one writable layer per OCI layer).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import fc from 'fast-check';
import { applyLayer, type ApplyEntry } from '../../src/convert/apply.ts';
import { TreeModel } from '../../src/convert/tree-model.ts';
import { CASES } from './apply-cases.ts';
import { stream } from '../helpers/layer-entries.ts';
import { describeStack, stackArb } from '../helpers/layer-stacks.ts';
import { apiListing } from '../helpers/ext4-image.ts';
import { ImageDevice } from '../ext4/fs-peers.ts';
import { Ext4 } from '../../src/ext4/fs.ts';
import { Teardown, assertFsckClean, assertSameListing, ext4Listing, fuse2fsMount, secondsOnly } from './helpers.ts';
import { suiteTempDir, withTempDir } from '../helpers/temp.ts';

const UUID = new Uint8Array([0x6f, 0x62, 0x64, 0x2d, 0x61, 0x70, 0x70, 0x6c, 0x79, 0x2d, 0x74, 0x65, 0x73, 0x74, 0x00, 0x01]);
const SIZE = 128 << 20;

interface Outcome { error: unknown; model: TreeModel; api: string[] }

/**
 * Applies `layers` to a new image at `img` and to a model, layer by layer; e2fsck after each
 * flushed layer (also after a layer that failed: what was applied before the failure must be
 * a consistent filesystem).
 */
async function applyBoth(img: string, layers: ApplyEntry[][]): Promise<Outcome> {
  const model = new TreeModel();
  for (const [i, layer] of layers.entries()) {
    const name = `layer-${i + 1}`;
    const device = i === 0 ? await ImageDevice.create(img, SIZE) : await ImageDevice.open(img);
    try {
      const fs = i === 0 ? await Ext4.format(device, { uuid: UUID }) : await Ext4.open(device);
      let ours: unknown;
      await applyLayer(fs, stream(layer), { name }).catch((e: unknown) => (ours = e));
      let theirs: unknown;
      await applyLayer(model, stream(layer), { name }).catch((e: unknown) => (theirs = e));
      assert.equal(ours instanceof Error ? ours.message : ours, theirs instanceof Error ? theirs.message : theirs, `${name}: the engine and the model fail alike`);
      await fs.flush();
      await assertFsckClean(img, `after ${name}`);
      if (ours || i === layers.length - 1) return { error: ours, model, api: await apiListing(fs) };
    } finally {
      await device.close();
    }
  }
  throw new Error('no layers');
}

/** The image's tree through fuse2fs and the engine's API equals the model's. */
async function assertSameTree(img: string, work: string, { model, api }: Outcome): Promise<void> {
  assertSameListing(api, await apiListing(model), ['Ext4 readdir/stat', 'model']);
  const td = new Teardown();
  try {
    const mnt = await fuse2fsMount(img, work, td);
    assertSameListing(secondsOnly(await ext4Listing(mnt)), secondsOnly(model.listing({ noLostFound: true }).split('\n')), ['fuse2fs', 'model']);
  } finally {
    await td.run();
  }
}

describe('applyLayer on Ext4: the behaviours', () => {
  const tmp = suiteTempDir('obd-apply-ext4-');
  for (const [i, c] of CASES.entries()) {
    test(c.name, async () => {
      const img = path.join(tmp.path, `case-${i}.img`);
      const outcome = await applyBoth(img, c.layers);
      if (c.fails) assert.match(String((outcome.error as Error | undefined)?.message), c.fails);
      else assert.equal(outcome.error, undefined);
      await assertSameTree(img, tmp.path, outcome);
    });
  }
});

describe('applyLayer on Ext4: random layer stacks', () => {
  test('the engine shows what the model shows, e2fsck clean after every layer', { timeout: 180_000 }, async () => {
    await fc.assert(fc.asyncProperty(stackArb({ wellFormed: false }), async (layers) => {
      await withTempDir(async (dir) => {
        const img = path.join(dir, 'fs.img');
        try {
          await assertSameTree(img, dir, await applyBoth(img, layers));
        } catch (e) {
          throw new Error(`${(e as Error).message}\n${describeStack(layers)}`);
        }
      }, 'obd-apply-prop-');
    }), { numRuns: Number(process.env.EXT4_RUNS ?? 20) });
  });
});

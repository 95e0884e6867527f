/**
 * Through the real kernel: nbdfuse → losetup → ext4. First on a RAM disk; then an ext4
 * filesystem stored as a two-layer LSMT image; then a writable upper layer on that image,
 * committed after unmounting and read back as a third layer.
 */
import assert from 'node:assert/strict';
import { copyFile, mkdir, truncate, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { openImage } from '../../src/image/open.ts';
import { MemoryDevice } from '../../src/io/memory.ts';
import { commitLayer } from '../../src/lsmt/commit.ts';
import { importRaw, topUuid } from '../../src/lsmt/import.ts';
import { WritableLayer } from '../../src/lsmt/writable.ts';
import { R, TEXT } from '../helpers/recipes.ts';
import { Teardown, attach, kernelSkipReason, mountFs, treeDigest, umount } from './helpers/kernel.ts';
import { must, sha256File } from './helpers/run.ts';
import { startServer } from './helpers/server.ts';
import { suiteTempDir } from '../helpers/temp.ts';

const MiB = 1 << 20;
const skip = kernelSkipReason();
if (skip) console.log(`# nbd kernel tests skipped: ${skip}`);

/** Writes a few files of varied sizes under `root/sub`. */
async function writeFiles(root: string, sub: string, label: string): Promise<void> {
  await mkdir(path.join(root, sub), { recursive: true });
  await writeFile(path.join(root, sub, 'big.bin'), R(`${label}-big`, 3 * MiB + 1234));
  await writeFile(path.join(root, sub, 'notes.txt'), TEXT(label.length * 100, 20000));
  for (let i = 0; i < 20; i++) await writeFile(path.join(root, sub, `small-${i}.bin`), R(`${label}-${i}`, 100 + i * 517));
}

describe('nbd through the kernel', { skip, timeout: 180_000 }, () => {
  const tmp = suiteTempDir('obd-nbd-kernel-');

  it('ext4 on a RAM-disk export: mkfs, write, unmount, detach, reattach, compare', async () => {
    const td = new Teardown();
    const ram = new MemoryDevice(64 * MiB, 'ram');
    const srv = await startServer({ exports: { ram } });
    td.add(() => srv.stop());
    try {
      const first = new Teardown();
      let written: Map<string, string>;
      try {
        const { loop } = await attach(srv.uri('ram'), tmp.path, first);
        await must('mkfs.ext4', ['-q', '-F', loop]);
        const mnt = await mountFs(loop, tmp.path, first);
        await writeFiles(mnt, 'a', 'ram');
        written = await treeDigest(mnt);
        assert.equal(written.size, 22);
      } finally {
        await first.run();
      }
      // The bytes are in the server's device, not just in some kernel cache.
      assert.ok(Buffer.from(ram.bytes.buffer).indexOf(R('ram-big', 4096)) >= 0, 'file data reached the device');
      const { loop } = await attach(srv.uri('ram'), tmp.path, td, { readOnly: true });
      const again = await mountFs(loop, tmp.path, td, ['ro', 'noload']);
      assert.deepEqual(await treeDigest(again), written);
    } finally {
      await td.run();
    }
  });

  it('ext4 from a layered image, then a writable upper layer committed and read back', async () => {
    // Build the image: ext4 with files (layer 1), then changes to it (layer 2).
    const td = new Teardown();
    const work = path.join(tmp.path, 'layered');
    await mkdir(work);
    const base = path.join(work, 'base.img');
    const app = path.join(work, 'app.img');
    const l1 = path.join(work, 'l1.lsmt');
    const l2 = path.join(work, 'l2.lsmt');
    const l3 = path.join(work, 'l3.lsmt');
    let expectApp: Map<string, string>;
    let expectFinal: Map<string, string>;
    try {
      await truncate(await writeFile(base, '').then(() => base), 64 * MiB);
      await must('mkfs.ext4', ['-q', '-F', base]);
      const m1 = await mountFs(base, work, td, ['loop']);
      await writeFiles(m1, 'base', 'base');
      await umount(m1);
      await copyFile(base, app);
      const m2 = await mountFs(app, work, td, ['loop']);
      await writeFiles(m2, 'app', 'app');
      await writeFile(path.join(m2, 'base', 'notes.txt'), TEXT(777, 5000));
      await unlink(path.join(m2, 'base', 'small-3.bin'));
      expectApp = await treeDigest(m2);
      await umount(m2);
      await importRaw(base, l1);
      const lower = await openImage([l1]);
      try {
        await importRaw(app, l2, { base: lower });
      } finally {
        await lower.close();
      }
    } finally {
      await td.run();
    }

    // Serve the two-layer image read-only and mount it.
    const stack = await openImage([l1, l2]);
    try {
      const srv = await startServer({ exports: { img: stack } });
      td.add(() => srv.stop());
      const flat = path.join(work, 'flat.raw');
      await must('nbdcopy', [srv.uri('img'), flat]);
      assert.equal(await sha256File(flat), await sha256File(app), 'the flattened stack is the app image');
      const { loop } = await attach(srv.uri('img'), tmp.path, td, { readOnly: true });
      const mnt = await mountFs(loop, tmp.path, td, ['ro', 'noload']);
      assert.deepEqual(await treeDigest(mnt), expectApp);
    } finally {
      await td.run();
    }

    // A writable upper layer on the same stack: write through the kernel, unmount, commit.
    const data = path.join(work, 'rw.data');
    const index = path.join(work, 'rw.index');
    const upper = await WritableLayer.create(data, index, { virtualSize: 0, lower: stack, ownsLower: false, parentUuid: topUuid(stack) });
    try {
      const srv = await startServer({ exports: { rw: upper } });
      td.add(() => srv.stop());
      const { loop } = await attach(srv.uri('rw'), tmp.path, td);
      const mnt = await mountFs(loop, tmp.path, td);
      await writeFiles(mnt, 'upper', 'upper');
      await unlink(path.join(mnt, 'app', 'big.bin'));
      await writeFile(path.join(mnt, 'base', 'small-5.bin'), R('rewritten', 70000));
      expectFinal = await treeDigest(mnt);
      await umount(mnt);
    } finally {
      await td.run();
      await upper.close();
      await stack.close();
    }
    await commitLayer(data, index, l3);

    // Reopen as three sealed layers and read the files back.
    const final = await openImage([l1, l2, l3]);
    try {
      assert.equal(final.layerCount, 3);
      const srv = await startServer({ exports: { '': final } });
      td.add(() => srv.stop());
      const { loop } = await attach(srv.uri(), tmp.path, td, { readOnly: true });
      const mnt = await mountFs(loop, tmp.path, td, ['ro', 'noload']);
      const got = await treeDigest(mnt);
      assert.deepEqual(got, expectFinal);
      assert.ok(got.has(path.join('upper', 'big.bin')) && !got.has(path.join('app', 'big.bin')));
    } finally {
      await td.run();
      await final.close();
    }
  });
});

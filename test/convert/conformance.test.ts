/**
 * `obd convert` against a converter nobody here wrote (issue 18): the crafted image (every
 * tar case) and the realistic one (real system trees) are converted; after every layer the
 * stack passes `e2fsck -fn`; the final tree through fuse2fs and through the kernel (obd serve
 * + nbdfuse + loop, `ro,noload`) equals umoci's unpacked tree (paths, types, modes, owners,
 * mtimes, sha256 of every file, link targets, device numbers, hardlink groups, xattrs); a
 * directory of thousands of entries is an htree. For the crafted image also: its oci-archive
 * and docker archive convert to the same layers, an image made of its first two layers to the
 * same two, and a conversion as an unprivileged user to the same manifest.
 *
 * test/convert/harness.test.ts shows each of these checks passing on an ext4 e2fsprogs made
 * and failing on a changed byte, mode or xattr.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmod, chown, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { obd } from '../helpers/cli.ts';
import { listTree } from '../helpers/fs-listing.ts';
import { craftedImage, MANY_DIR, realisticImage, writeImage, type BuiltImage } from '../helpers/oci-images.ts';
import { suiteTempDir } from '../helpers/temp.ts';
import { ensureTestUser, obdAsTestUser, TEST_USER } from '../helpers/user.ts';
import { kernelSkipReason } from '../nbd/helpers/kernel.ts';
import {
  assertFsckClean,
  assertIndexed,
  assertSameListing,
  exportStack,
  ext4Listing,
  fuse2fsMount,
  kernelMount,
  peersSkipReason,
  readOci,
  secondsOnly,
  Teardown,
  umociUnpack,
  withoutRootMtime,
  type OciImage,
} from './helpers.ts';

const skip = peersSkipReason();

async function convert(source: string, dest: string, extra: string[] = []): Promise<void> {
  const r = await obd(['convert', source, dest, '--json', ...extra]);
  assert.equal(r.code, 0, `obd convert ${source} ${dest}: ${r.stderr}`);
}

interface Case {
  name: 'crafted' | 'realistic';
  build: (dir: string) => Promise<BuiltImage>;
  /** Extra `obd convert` options (the crafted image uses the default 64 GiB). */
  options: string[];
  /** Whether a layer of the image sets the root directory's attributes. */
  rootEntry: boolean;
  /** A directory of thousands of entries, which must be an htree. */
  bigDir: string;
}

const CASES: Case[] = [
  { name: 'crafted', build: craftedImage, options: [], rootEntry: true, bigDir: `/${MANY_DIR}` },
  { name: 'realistic', build: (dir) => realisticImage(dir, { sizeMiB: 64 }), options: ['--vsize', '8G'], rootEntry: false, bigDir: '/usr/share/man/man1' },
];

for (const c of CASES) {
  describe(`obd convert: the ${c.name} image`, { skip }, () => {
    const tmp = suiteTempDir(`obd-convert-${c.name}-`);
    let img: BuiltImage;
    let oracle: string[];
    let out: OciImage;
    let flat: string;
    const dest = () => `oci:${tmp.path}/out:${c.name}`;
    before(async () => {
      img = await c.build(path.join(tmp.path, 'img'));
      // umoci (system time) and the conversion (user time) side by side.
      const [listing] = await Promise.all([umociUnpack(img.plainOciRef, tmp.path).then((rootfs) => listTree(rootfs)), convert(img.ociRef, dest(), c.options)]);
      oracle = c.rootEntry ? listing : withoutRootMtime(listing);
      out = await readOci(path.join(tmp.path, 'out'), c.name);
      flat = path.join(tmp.path, 'flat.raw');
      await exportStack(out.blobs, flat);
    });

    const final = (l: string[]) => (c.rootEntry ? l : withoutRootMtime(l));

    it('makes one overlaybd layer per source layer, typed and annotated as the reference convertor does', () => {
      assert.equal(out.manifest.layers.length, img.layers.length);
      for (const l of out.manifest.layers) {
        assert.equal(l.mediaType, 'application/vnd.oci.image.layer.v1.tar');
        assert.equal(l.annotations?.['containerd.io/snapshot/overlaybd/blob-digest'], l.digest);
      }
    });

    it('passes e2fsck -fn with every layer stacked on the ones below', async () => {
      const raw = path.join(tmp.path, 'stack.raw');
      for (let n = 1; n <= out.blobs.length; n++) {
        await exportStack(out.blobs.slice(0, n), raw);
        await assertFsckClean(raw, `the stack of layers 1..${n} of ${out.blobs.length}`);
      }
    });

    it("shows umoci's tree through fuse2fs", async () => {
      const td = new Teardown();
      try {
        const listing = final(await ext4Listing(await fuse2fsMount(flat, tmp.path, td)));
        assertSameListing(secondsOnly(listing), secondsOnly(oracle), ['converted (fuse2fs)', 'umoci']);
      } finally {
        await td.run();
      }
    });

    it("shows umoci's tree through the kernel (obd serve, nbdfuse, loop, mount -o ro,noload)", { skip: kernelSkipReason() }, async () => {
      const td = new Teardown();
      try {
        const listing = final(await ext4Listing(await kernelMount(dest(), tmp.path, td)));
        assertSameListing(listing, oracle, ['converted (kernel)', 'umoci']);
      } finally {
        await td.run();
      }
    });

    it('indexes the directory of thousands of entries (debugfs htree)', async () => {
      await assertIndexed(flat, c.bigDir);
    });

    if (c.name !== 'crafted') return;

    it('converts the same image from its oci-archive and its docker archive to the same layers and config', async () => {
      for (const [source, name] of [[img.ociArchiveRef, 'out-archive'], [img.dockerRef, 'out-docker']] as const) {
        await convert(source, `oci:${tmp.path}/${name}:${c.name}`, c.options);
        const d = await readOci(path.join(tmp.path, name), c.name);
        assert.deepEqual(d.manifest.layers.map((l) => l.digest), out.manifest.layers.map((l) => l.digest), source);
        assert.equal(d.manifest.config.digest, out.manifest.config.digest, source);
      }
    });

    it('converts a source layer over the same parent chain to the same overlaybd layer in another image', async () => {
      const prefix = await writeImage(path.join(tmp.path, 'prefix'), 'prefix', 'p', img.layers.slice(0, 2));
      await convert(prefix.ociRef, `oci:${tmp.path}/out-prefix:p`, c.options);
      const p = await readOci(path.join(tmp.path, 'out-prefix'), 'p');
      assert.deepEqual(p.manifest.layers.map((l) => l.digest), out.manifest.layers.slice(0, 2).map((l) => l.digest));
    });

    it('converts as an unprivileged user (no root, mount or loop device) to the same manifest, byte for byte', async () => {
      ensureTestUser();
      const home = path.join(tmp.path, 'user');
      await mkdir(home);
      await chmod(tmp.path, 0o755);
      await chown(home, Number(execFileSync('id', ['-u', TEST_USER], { encoding: 'utf8' })), 0);
      const r = await obdAsTestUser(['convert', img.ociRef, `oci:${home}/out:${c.name}`, '--json', ...c.options], home, { timeoutMs: 120_000 });
      assert.equal(r.code, 0, `obd convert as ${TEST_USER}: ${r.stderr}`);
      assert.equal((await readOci(path.join(home, 'out'), c.name)).manifestDigest, out.manifestDigest);
    });
  });
}

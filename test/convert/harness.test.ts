/**
 * The conformance harness checked on its own, before any converter is trusted with it: the
 * test images are deterministic and readable by skopeo, umoci (the oracle) unpacks the crafted
 * cases as the OCI spec says, an ext4 that e2fsprogs makes from umoci's tree passes every check
 * the conformance suite applies (through obd import/push/export/serve, fuse2fs and the kernel),
 * and the comparison fails when one byte, one mode or one xattr differs.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { obd } from '../helpers/cli.ts';
import { diffListings, diffPaths, listTree } from '../helpers/fs-listing.ts';
import { craftedImage, MANY_COUNT, MANY_DIR, type BuiltImage } from '../helpers/oci-images.ts';
import { suiteTempDir } from '../helpers/temp.ts';
import { kernelSkipReason } from '../nbd/helpers/kernel.ts';
import { must, sha256File } from '../nbd/helpers/run.ts';
import { assertFsckClean, assertIndexed, assertSameListing, exportStack, ext4Listing, fuse2fsMount, kernelMount, peersSkipReason, readOci, secondsOnly, Teardown, umociUnpack } from './helpers.ts';

/**
 * Puts onto the tree at `dst` what `mke2fs -d` drops from the one at `src`: the root's mode and
 * owner, and mtimes with nanoseconds or outside 1970..2038; or, given paths, those paths' mtimes.
 */
const COPY_TIMES = `
import os, sys
src, dst = map(os.fsencode, sys.argv[1:3])
def copy(rel):
    ns = os.lstat(os.path.join(src, rel)).st_mtime_ns
    os.utime(os.path.join(dst, rel), ns=(ns, ns), follow_symlinks=False)
if len(sys.argv) > 3:
    for rel in sys.argv[3:]: copy(os.fsencode(rel))
    sys.exit()
st = os.lstat(src)
os.chown(dst, st.st_uid, st.st_gid); os.chmod(dst, st.st_mode & 0o7777)
for top, dirs, files in os.walk(src):
    for name in [b''] + dirs + files:
        rel = os.path.relpath(os.path.join(top, name), src)
        ns = os.lstat(os.path.join(src, rel)).st_mtime_ns
        if rel == b'.' or ns % 10**9 or not 0 <= ns < 2**31 * 10**9: copy(rel)
`;

const lineOf = (listing: string[], p: string) => listing.find((l) => l.startsWith(`${p} `));

describe('the conformance harness', { skip: peersSkipReason() }, () => {
  const tmp = suiteTempDir('obd-convert-harness-');
  let img: BuiltImage;
  let rootfs: string;
  let oracle: string[];
  before(async () => {
    img = await craftedImage(path.join(tmp.path, 'img'));
    rootfs = await umociUnpack(img.plainOciRef, tmp.path);
    oracle = await listTree(rootfs);
  });

  it('builds the crafted image byte-identically every time, as an OCI layout, an oci-archive and a docker archive skopeo reads', async () => {
    const again = await craftedImage(path.join(tmp.path, 'img2'));
    assert.deepEqual(again.layers.map((l) => l.digest), img.layers.map((l) => l.digest));
    assert.equal(again.manifestDigest, img.manifestDigest);
    assert.equal(await sha256File(again.dockerArchive), await sha256File(img.dockerArchive));
    assert.deepEqual(new Set(img.layers.map((l) => l.mediaType.replace(/.*\.tar/, 'tar'))), new Set(['tar+gzip', 'tar+zstd', 'tar']));

    const oci = JSON.parse(await must('skopeo', ['inspect', img.ociRef])) as { Layers: string[] };
    assert.deepEqual(oci.Layers, img.layers.map((l) => l.digest));
    const archive = JSON.parse(await must('skopeo', ['inspect', img.ociArchiveRef])) as { Layers: string[] };
    assert.deepEqual(archive.Layers, img.layers.map((l) => l.digest));
    const docker = JSON.parse(await must('skopeo', ['inspect', img.dockerRef])) as { Layers: string[] };
    assert.deepEqual(docker.Layers, img.layers.map((l) => l.diffId), 'docker save layers are the plain tars');
    const cfg = JSON.parse(await must('skopeo', ['inspect', '--config', img.dockerRef])) as { rootfs: { diff_ids: string[] } };
    assert.deepEqual(cfg.rootfs.diff_ids, img.layers.map((l) => l.diffId));
  });

  it('umoci unpacks every crafted case as the OCI spec says', () => {
    const gone = ['del/file', 'del/dir', 'del/dir/x', 'del/later', 'opq/old1', 'opq/olddir', 'opq/new1', 'opq2/old2', 'gnulong', `${MANY_DIR}/f00000`];
    for (const p of gone) assert.equal(lineOf(oracle, p), undefined, `${p} is deleted`);
    const want: [string, RegExp][] = [
      ['.', /^\. dir 0751 0:0 1600000300\.000000000$/],
      ['del/kept', / file 0644 /],
      ['opq', / dir /],
      ['opq2/-new2', / file /],
      ['replace/file-to-dir/child', / file /],
      ['replace/dir-to-file', / file 0644 .* 10:/],
      ['replace/dir-to-symlink', / symlink .*->\.\.\/files\/one$/],
      ['replace/symlink-to-dir/inside', / file /],
      ['files/one', / 2:/],
      ['files/block', / file 0600 /],
      ['files/sparse', / 10485760:/],
      ['files/setuid', / 4755 /],
      ['files/hugeids', / 4000000000:3000000000 /],
      ['files/t-1960', / -315619200\.500000000 /],
      ['files/t-2200', / 7258118400\.999999999 /],
      ['hardlinks/to-lower', / hl=files\/lower-target$/],
      ['hardlinks/third', / hl=files\/hl-a$/],
      ['hardlinks/new-b', / hl=hardlinks\/new-a$/],
      ['devs/huge', / chr 0600 0:0 \S+ 4095,1048575$/],
      ['devs/fifo', / fifo /],
      ['links/s4000', /->(d\/){1999}tt$/],
      ['names/%FF%FE-latin1-caf%E9', / file /],
      ['xattrs/user', / x:user\.new=76616c7565$/],
      ['xattrs/cap', / x:security\.capability=0100000200240000/],
      ['xattrs/acl', / x:system\.posix_acl_access=02000000/],
      ['xattrs/acldir', / x:system\.posix_acl_default=02000000/],
      ['xattrs/trusted', / x:trusted\.t=78$/],
    ];
    for (const [p, re] of want) assert.match(lineOf(oracle, p) ?? `${p} (missing)`, re, p);
    assert.equal(oracle.filter((l) => l.startsWith(`${MANY_DIR}/`)).length, MANY_COUNT, `${MANY_DIR} holds ${MANY_COUNT} entries`);
  });

  it('an ext4 e2fsprogs makes from umoci\'s tree passes every check: e2fsck, htree, fuse2fs and the kernel through obd import, push, export and serve', async () => {
    const td = new Teardown();
    try {
      const raw = path.join(tmp.path, 'ref.raw');
      await must('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '4096', '-d', rootfs, raw, '256M']);
      const rw = await fuse2fsMount(raw, tmp.path, td, { rw: true });
      await must('python3', ['-c', COPY_TIMES, rootfs, rw]);
      await td.run();
      await must('e2fsck', ['-fyD', raw]).catch(() => {}); // index the large directories (exit 1: "modified")
      await assertFsckClean(raw, 'the e2fsprogs-made reference');

      const layer = path.join(tmp.path, 'ref.lsmt');
      for (const args of [['import', raw, layer], ['push', layer, `oci:${tmp.path}/pushed:t`]]) {
        const r = await obd(args);
        assert.equal(r.code, 0, `obd ${args[0]}: ${r.stderr}`);
      }
      const pushed = await readOci(path.join(tmp.path, 'pushed'), 't');
      const flat = path.join(tmp.path, 'flat.raw');
      await exportStack(pushed.blobs, flat);
      await assertFsckClean(flat, 'the exported stack');
      await assertIndexed(flat, `/${MANY_DIR}`);
      assertSameListing(secondsOnly(await ext4Listing(await fuse2fsMount(flat, tmp.path, td))), secondsOnly(oracle), ['fuse2fs', 'umoci']);
      if (!kernelSkipReason()) assertSameListing(await ext4Listing(await kernelMount(`oci:${tmp.path}/pushed:t`, tmp.path, td)), oracle, ['kernel', 'umoci']);
    } finally {
      await td.run();
    }
  });

  // On a copy of the stack the test above exported.
  it('fails the comparison when one byte, one mode or one xattr differs, naming exactly those paths', async () => {
    const td = new Teardown();
    try {
      const raw = path.join(tmp.path, 'mutated.raw');
      await must('cp', ['--sparse=always', path.join(tmp.path, 'flat.raw'), raw]);
      const rw = await fuse2fsMount(raw, tmp.path, td, { rw: true });
      const big = path.join(rw, 'files/big');
      const bytes = await readFile(big);
      await must('python3', ['-c', `import os,sys; fd=os.open(sys.argv[1], os.O_WRONLY); os.pwrite(fd, bytes([${bytes[500_000]! ^ 1}]), 500000); os.close(fd)`, big]);
      await must('chmod', ['0640', path.join(rw, 'files/one')]);
      await must('setfattr', ['-n', 'user.new', '-v', 'valuf', path.join(rw, 'xattrs/user')]);
      // The times the edits moved are put back, so only the three changes remain.
      await must('python3', ['-c', COPY_TIMES, rootfs, rw, 'files/big']);
      await td.run();
      const listing = secondsOnly(await ext4Listing(await fuse2fsMount(raw, tmp.path, td)));
      const d = diffListings(listing, secondsOnly(oracle));
      assert.deepEqual(diffPaths(d), ['files/big', 'files/one', 'xattrs/user']);
      assert.throws(() => assertSameListing(listing, secondsOnly(oracle), ['mutated', 'umoci']), /different \(3\):[\s\S]*files\/big/);
    } finally {
      await td.run();
    }
  });
});

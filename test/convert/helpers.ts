/**
 * The checks every converted image goes through, shared by the conformance suite and the
 * harness's own validation: umoci's unpacked tree as the oracle, `e2fsck -fn` of the stack up
 * to each layer, the tree as fuse2fs and as the kernel (nbdfuse + loop) show it, and the htree
 * of a large directory as debugfs sees it.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { obd, serveJson } from '../helpers/cli.ts';
import { diffListings, formatDiff, listTree, type ListingOptions } from '../helpers/fs-listing.ts';
import { attach, mountFs, Teardown, umount } from '../nbd/helpers/kernel.ts';
import { missing, must, run } from '../nbd/helpers/run.ts';

export { Teardown };

/** Why the peer-based checks cannot run here, or false. */
export function peersSkipReason(): string | false {
  if (process.getuid?.() !== 0) return 'umoci unpack, mknod and trusted.* xattrs in the test images need root';
  const m = missing('umoci', 'python3', 'tar', 'gzip', 'zstd', 'mke2fs', 'e2fsck', 'debugfs', 'fuse2fs', 'skopeo');
  if (m.length) return `missing tools: ${m.join(', ')} (scripts/setup-peers.sh installs them)`;
  if (!existsSync('/dev/fuse')) return 'no /dev/fuse: fuse2fs cannot run';
  return false;
}

/**
 * Why `obd convert` cannot be tested: only when the command does not exist yet. Once it exists
 * the suite runs and fails on whatever is wrong.
 */
export interface OciImage {
  manifest: { layers: { digest: string; mediaType: string; annotations?: Record<string, string> }[]; config: { digest: string } };
  manifestDigest: string;
  /** Each layer's blob file, bottom first. */
  blobs: string[];
}

/** The manifest tagged `tag` in the OCI layout `dir` (the only one when no tag is given). */
export async function readOci(dir: string, tag?: string): Promise<OciImage> {
  const index = JSON.parse(await readFile(path.join(dir, 'index.json'), 'utf8')) as { manifests: { digest: string; annotations?: Record<string, string> }[] };
  const picked = tag === undefined ? index.manifests : index.manifests.filter((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag);
  assert.equal(picked.length, 1, `${dir}: one manifest tagged ${tag ?? '(any)'} in index.json`);
  const blob = (d: string) => path.join(dir, 'blobs', ...d.split(':'));
  const manifest = JSON.parse(await readFile(blob(picked[0]!.digest), 'utf8')) as OciImage['manifest'];
  return { manifest, manifestDigest: picked[0]!.digest, blobs: manifest.layers.map((l) => blob(l.digest)) };
}

/** `umoci unpack` of `ref` (an `oci:DIR:TAG`) into `work/bundle`; returns the rootfs. */
export async function umociUnpack(ref: string, work: string): Promise<string> {
  const [, dir, tag] = /^oci:(.*):([^:/]+)$/.exec(ref)!;
  const bundle = path.join(work, 'bundle');
  await must('umoci', ['unpack', '--image', `${dir}:${tag}`, bundle], { timeoutMs: 300_000 });
  return path.join(bundle, 'rootfs');
}

/** The flattened raw disk of the first `n` layers (`obd export`). */
export async function exportStack(blobs: string[], out: string): Promise<void> {
  const r = await obd(['export', '--force', ...blobs, out]);
  assert.equal(r.code, 0, `obd export of ${blobs.length} layer(s): ${r.stderr}`);
}

/** Fails with e2fsck's report unless the filesystem in `raw` is clean (`e2fsck -fn`). */
export async function assertFsckClean(raw: string, what: string): Promise<void> {
  const r = await run('e2fsck', ['-fn', raw], { timeoutMs: 300_000 });
  assert.equal(r.code, 0, `e2fsck -fn ${what} exited ${r.code}:\n${r.stdout}${r.stderr}`);
}

/** debugfs' htree dump of `dir` in `raw`; fails when the directory is not hash-indexed. */
export async function assertIndexed(raw: string, dir: string): Promise<string> {
  const r = await run('debugfs', ['-R', `htree ${dir}`, raw]);
  const out = r.stdout + r.stderr;
  assert.doesNotMatch(out, /Not a hash-indexed directory|File not found/i, `${dir} is indexed:\n${out.slice(0, 2000)}`);
  assert.match(out, /Root node dump:/, `debugfs htree ${dir}:\n${out.slice(0, 2000)}`);
  return out;
}

/** Mounts the ext4 in `image` with fuse2fs (read-only unless `rw`) on a new directory; teardown unmounts it. */
export async function fuse2fsMount(image: string, work: string, td: Teardown, opts: { rw?: boolean } = {}): Promise<string> {
  const mnt = path.join(work, `fuse2fs-${Math.random().toString(36).slice(2, 8)}`);
  await mkdir(mnt);
  await must('fuse2fs', ['-o', opts.rw ? 'rw' : 'ro', image, mnt]);
  td.add(() => umount(mnt));
  return mnt;
}

/** `obd serve` of `image`, nbdfuse + read-only loop device, `mount -o ro,noload`; teardown undoes it all. */
export async function kernelMount(image: string, work: string, td: Teardown): Promise<string> {
  const srv = await serveJson([image]);
  td.add(() => srv.stop());
  const uri = srv.ready.exports[0]!.uri;
  const { loop } = await attach(uri, work, td, { readOnly: true });
  return mountFs(loop, work, td, ['ro', 'noload']);
}

/** Asserts two listings are equal, reporting what differs when they are not. */
export function assertSameListing(actual: string[], expected: string[], names: [string, string]): void {
  const d = diffListings(actual, expected);
  const report = formatDiff(d, names);
  assert.ok(report === '', `${names[0]} differs from ${names[1]}:\n${report}`);
}

/** The listing of an ext4 mounted at `mnt` (its root lost+found left out). */
export function ext4Listing(mnt: string, opts: ListingOptions = {}): Promise<string[]> {
  return listTree(mnt, { ...opts, noLostFound: true });
}

/**
 * Drops the nanoseconds of every mtime: fuse2fs (1.47) stores them but reports whole seconds,
 * so its listing is compared at that precision (the kernel's at full precision).
 */
export function secondsOnly(listing: string[]): string[] {
  return listing.map((l) => l.replace(/^(\S+ \S+ \S+ \S+ -?\d+)\.\d{9}/, '$1'));
}

/** Replaces the mtime of the root line (for images no layer of which sets the root's attributes). */
export function withoutRootMtime(listing: string[]): string[] {
  return listing.map((l) => (l.startsWith('. ') ? l.split(' ').map((f, i) => (i === 4 ? '-' : f)).join(' ') : l));
}

/**
 * Test images for `obd convert`, built offline and deterministically with tools this project
 * did not write (GNU tar, python3 tarfile, gzip, zstd), so they are an independent reference:
 *
 * - `craftedImage(dir)`: four small layers holding every tar case of issue 18 (each file,
 *   link, device, mode, owner, time, name, xattr and OCI whiteout case), gzip, zstd and plain;
 * - `realisticImage(dir, opts)`: layers cut from this machine's own /usr/lib, /usr/share and
 *   /etc (real sizes, thousands of entries in one directory), later layers deleting and
 *   overwriting.
 *
 * Each is written as an OCI layout (`oci:DIR:TAG`), an oci-archive and a `docker save` archive. Staging
 * trees are made by test/helpers/stage-tree.py as root (mknod, xattrs, chown); layer tars
 * by GNU tar from an explicit, ordered member list, so an entry order (an opaque marker after
 * the directory's new children, say) is part of the recipe.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync } from 'node:fs';
import { link, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const STAGE = path.join(HERE, 'stage-tree.py');

export type Compression = 'gzip' | 'zstd' | 'none';
type Bytes = string | Uint8Array;
type Time = [sec: number, nsec: number];

export interface StageEntry {
  p: Uint8Array;
  t: 'file' | 'dir' | 'symlink' | 'hardlink' | 'chr' | 'blk' | 'fifo';
  mode: number;
  uid: number;
  gid: number;
  mtime: Time;
  data?: { gen: string; size: number } | { hex: string } | { copy: string } | { size: number; segments: [number, number, string][] };
  target?: Uint8Array;
  rdev?: [number, number];
  xattrs?: Record<string, Uint8Array>;
}

interface Meta {
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: Time;
  xattrs?: Record<string, Bytes>;
}

const T0: Time = [1600000000, 0];
const b = (s: Bytes): Uint8Array => (typeof s === 'string' ? Buffer.from(s) : s);

function entry(p: Bytes, t: StageEntry['t'], defMode: number, m: Meta = {}): StageEntry {
  const xattrs = m.xattrs && Object.fromEntries(Object.entries(m.xattrs).map(([k, v]) => [k, b(v)]));
  return { p: b(p), t, mode: m.mode ?? defMode, uid: m.uid ?? 0, gid: m.gid ?? 0, mtime: m.mtime ?? T0, ...(xattrs && { xattrs }) };
}
export const dir = (p: Bytes, m?: Meta): StageEntry => entry(p, 'dir', 0o755, m);
/** A file of `size` bytes generated from `seed` (or the given bytes). */
export const file = (p: Bytes, content: { seed: string; size: number } | Bytes, m?: Meta): StageEntry => ({
  ...entry(p, 'file', 0o644, m),
  data: typeof content === 'string' || content instanceof Uint8Array ? { hex: Buffer.from(b(content)).toString('hex') } : { gen: content.seed, size: content.size },
});
export const copyOf = (p: Bytes, from: string, m?: Meta): StageEntry => ({ ...entry(p, 'file', 0o644, m), data: { copy: from } });
/** A file with holes: data only in `segments` ([offset, length, seed]). */
export const sparse = (p: Bytes, size: number, segments: [number, number, string][], m?: Meta): StageEntry => ({ ...entry(p, 'file', 0o644, m), data: { size, segments } });
export const symlink = (p: Bytes, target: Bytes, m?: Meta): StageEntry => ({ ...entry(p, 'symlink', 0o777, m), target: b(target) });
export const hardlink = (p: Bytes, target: Bytes): StageEntry => ({ ...entry(p, 'hardlink', 0), target: b(target) });
export const device = (p: Bytes, t: 'chr' | 'blk', major: number, minor: number, m?: Meta): StageEntry => ({ ...entry(p, t, 0o600, m), rdev: [major, minor] });
export const fifo = (p: Bytes, m?: Meta): StageEntry => entry(p, 'fifo', 0o644, m);
/** OCI whiteout of `p` (an empty `.wh.NAME` file next to it). */
export const whiteout = (p: string): StageEntry => file(path.posix.join(path.posix.dirname(p), `.wh.${path.posix.basename(p)}`), '');
export const opaque = (d: string): StageEntry => file(`${d}/.wh..wh..opq`, '');

export interface LayerRecipe {
  /** Entries in archive order (parents first). */
  entries: StageEntry[];
  format: 'pax' | 'gnu';
  compression: Compression;
  /** Member names start with "./" (GNU tar -C dir .) rather than bare (as docker writes them). */
  dotSlash?: boolean;
  /** Archive the layer's root directory itself (member "./"), with these attributes. */
  root?: Meta;
  /** Members archived straight from the host's "/" (the realistic image), after `entries`. */
  hostPaths?: string[];
  /** A layer python3 tarfile writes instead (for what GNU tar cannot: a hardlink to a lower layer). */
  python?: string;
}

export interface LayerInfo {
  /** The blob as stored (compressed or not) and its digest. */
  blob: string;
  digest: string;
  size: number;
  mediaType: string;
  /** The uncompressed tar and its digest (the config's diff_id). */
  tar: string;
  diffId: string;
}

export interface BuiltImage {
  /** `oci:DIR:TAG` and `docker-archive:FILE` references for the same image (and `ociArchiveRef`, `plainOciRef` below). */
  ociRef: string;
  dockerRef: string;
  /** The same image with no zstd layer (for umoci 0.4, which reads gzip and plain only). */
  plainOciRef: string;
  /** `oci-archive:FILE`: the OCI layout as one tar. */
  ociArchiveRef: string;
  ociDir: string;
  tag: string;
  dockerArchive: string;
  layers: LayerInfo[];
  manifestDigest: string;
  configDigest: string;
}

function exec(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { maxBuffer: 256 << 20, env: { ...process.env, LC_ALL: 'C' } }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.slice(0, 6).join(' ')}…: ${String(stderr).trim() || err.message}`));
      else resolve(String(stdout));
    });
  });
}

const sha256 = (buf: Uint8Array) => createHash('sha256').update(buf).digest('hex');

/**
 * GNU tar names a PAX 1.0 sparse member "GNUSparseFile.<pid>/NAME" in its ustar header (the
 * real name is in the PAX record); the pid would make every build differ, so it becomes 0.
 */
function fixSparsePids(tar: Buffer): void {
  for (let off = 0; off + 512 <= tar.length; ) {
    const h = tar.subarray(off, off + 512);
    if (h.every((x) => x === 0)) break;
    const size = parseInt(h.subarray(124, 136).toString('latin1').replace(/\0.*$/s, '').trim() || '0', 8);
    const name = h.subarray(0, 100).toString('latin1').replace(/\0.*$/s, '');
    const fixed = name.replace(/GNUSparseFile\.\d+\//, 'GNUSparseFile.0/');
    if (fixed !== name) {
      h.fill(0, 0, 100);
      h.write(fixed, 0, 'latin1');
      h.fill(0x20, 148, 156);
      let sum = 0;
      for (const x of h) sum += x;
      h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    }
    off += 512 + Math.ceil(size / 512) * 512;
  }
}

const MEDIA: Record<Compression, string> = {
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  none: 'application/vnd.oci.image.layer.v1.tar',
};

/** Stages, archives and compresses layer `n` in `work` (stage-N/, layer-N.tar, layer-N.tar.gz|.zst). */
async function buildLayer(work: string, n: number, r: LayerRecipe): Promise<LayerInfo> {
  const stage = path.join(work, `stage-${n}`);
  const tar = path.join(work, `layer-${n}.tar`);
  await rm(stage, { recursive: true, force: true });
  const specFile = path.join(work, `stage-${n}.json`);
  const hex = (x: Uint8Array) => Buffer.from(x).toString('hex');
  const spec = {
    root: stage,
    entries: [
      dir('', r.root),
      ...r.entries,
    ].map((e) => ({ ...e, p: hex(e.p), ...(e.target && { target: hex(e.target) }), ...(e.xattrs && { xattrs: Object.fromEntries(Object.entries(e.xattrs).map(([k, v]) => [k, hex(v)])) }) })),
  };
  await writeFile(specFile, JSON.stringify(spec));
  await exec('python3', [STAGE, specFile]);
  if (r.python) {
    await exec('python3', ['-c', r.python, stage, tar]);
  } else {
    const prefix = r.dotSlash ? './' : '';
    const names = [...(r.root ? [Buffer.from('.')] : []), ...r.entries.map((e) => Buffer.concat([Buffer.from(prefix), e.p]))];
    const common = ['--no-recursion', '--null', '--numeric-owner'];
    // --sparse only in pax layers (PAX 1.0 members): umoci 0.4 cannot read GNU's old 'S' type.
    const fmt =
      r.format === 'pax'
        ? ['--format=pax', '--sparse', '--sparse-version=1.0', '--xattrs', '--xattrs-include=*', '--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime']
        : ['--format=gnu'];
    const lists: [string, Uint8Array[]][] = [[stage, names], ['/', (r.hostPaths ?? []).map((x) => Buffer.from(x))]];
    let mode = '-cf';
    for (const [from, members] of lists) {
      if (!members.length) continue;
      const list = path.join(work, `list-${n}-${mode}`);
      await writeFile(list, Buffer.concat(members.flatMap((x) => [x, Buffer.alloc(1)])));
      await exec('tar', [mode, tar, ...fmt, ...common, '-C', from, '-T', list]);
      mode = '-rf';
    }
    if (r.format === 'pax') {
      const bytes = await readFile(tar);
      fixSparsePids(bytes);
      await writeFile(tar, bytes);
    }
  }
  const diffId = `sha256:${sha256(await readFile(tar))}`;
  let blob = tar;
  if (r.compression === 'gzip') {
    blob = `${tar}.gz`;
    await exec('sh', ['-c', 'gzip -n -6 -c "$0" > "$1"', tar, blob]);
  } else if (r.compression === 'zstd') {
    blob = `${tar}.zst`;
    await exec('zstd', ['-q', '-3', '-f', tar, '-o', blob]);
  }
  const data = await readFile(blob);
  return { blob, digest: `sha256:${sha256(data)}`, size: data.length, mediaType: MEDIA[r.compression], tar, diffId };
}

async function putBlob(oci: string, data: Uint8Array): Promise<string> {
  const hex = sha256(data);
  await mkdir(path.join(oci, 'blobs', 'sha256'), { recursive: true });
  await writeFile(path.join(oci, 'blobs', 'sha256', hex), data);
  return `sha256:${hex}`;
}

function imageConfig(layers: LayerInfo[], name: string): Uint8Array {
  return Buffer.from(
    JSON.stringify({
      created: '2020-09-13T12:26:40Z',
      architecture: 'amd64',
      os: 'linux',
      config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['/bin/sh'], WorkingDir: '/', Labels: { 'org.example.image': name } },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      history: layers.map((_, i) => ({ created: '2020-09-13T12:26:40Z', created_by: `${name} layer ${i}` })),
    }),
  );
}

/** Writes an OCI image layout in `oci` with one manifest tagged `tag`; returns the manifest digest. */
async function writeLayout(oci: string, tag: string, config: Uint8Array, layers: { blob: string; mediaType: string }[]): Promise<string> {
  await rm(oci, { recursive: true, force: true });
  const configDigest = await putBlob(oci, config);
  const descs = [];
  for (const l of layers) {
    const data = await readFile(l.blob);
    descs.push({ mediaType: l.mediaType, digest: await putBlob(oci, data), size: data.length });
  }
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
      layers: descs,
    }),
  );
  const manifestDigest = await putBlob(oci, manifest);
  await writeFile(path.join(oci, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(
    path.join(oci, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: manifestDigest, size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': tag } }],
    }),
  );
  return manifestDigest;
}

/**
 * Writes the image four ways under `work`: `oci/` (the layers as built), the same as an
 * oci-archive, `oci-plain/` (the same image with zstd layers stored uncompressed: umoci 0.4
 * reads no zstd; the diff_ids and so the unpacked tree are the same) and a `docker save` archive.
 */
export async function writeImage(work: string, name: string, tag: string, layers: LayerInfo[]): Promise<BuiltImage> {
  const oci = path.join(work, 'oci');
  const config = imageConfig(layers, name);
  const configDigest = `sha256:${sha256(config)}`;
  const manifestDigest = await writeLayout(oci, tag, config, layers);
  const ociArchive = path.join(work, `${name}.oci.tar`);
  await exec('tar', ['-cf', ociArchive, '--format=ustar', '--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '-C', oci, 'oci-layout', 'index.json', 'blobs']);
  const plain = path.join(work, 'oci-plain');
  await writeLayout(plain, tag, config, layers.map((l) => (l.mediaType.endsWith('+zstd') ? { blob: l.tar, mediaType: MEDIA.none } : l)));

  // docker save: manifest.json, the config as <hex>.json, each layer's plain tar as <id>/layer.tar.
  const d = path.join(work, 'docker');
  await rm(d, { recursive: true, force: true });
  await mkdir(d);
  const cfgName = `${configDigest.slice(7)}.json`;
  await writeFile(path.join(d, cfgName), config);
  const members = ['manifest.json', 'repositories', cfgName];
  for (const l of layers) {
    const id = l.diffId.slice(7);
    await mkdir(path.join(d, id));
    await link(l.tar, path.join(d, id, 'layer.tar'));
    members.push(id, `${id}/layer.tar`);
  }
  const top = layers.at(-1)!.diffId.slice(7);
  await writeFile(path.join(d, 'manifest.json'), JSON.stringify([{ Config: cfgName, RepoTags: [`${name}:${tag}`], Layers: layers.map((l) => `${l.diffId.slice(7)}/layer.tar`) }]));
  await writeFile(path.join(d, 'repositories'), JSON.stringify({ [name]: { [tag]: top } }));
  const archive = path.join(work, `${name}.docker.tar`);
  await exec('tar', ['-cf', archive, '--format=ustar', '--no-recursion', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '-C', d, ...members]);
  await rm(d, { recursive: true, force: true });
  return { ociRef: `oci:${oci}:${tag}`, plainOciRef: `oci:${plain}:${tag}`, ociArchiveRef: `oci-archive:${ociArchive}`, dockerRef: `docker-archive:${archive}`, ociDir: oci, tag, dockerArchive: archive, layers, manifestDigest, configDigest };
}

async function build(work: string, name: string, tag: string, recipes: LayerRecipe[]): Promise<BuiltImage> {
  await mkdir(work, { recursive: true });
  const layers: LayerInfo[] = [];
  for (const [i, r] of recipes.entries()) layers.push(await buildLayer(work, i, r));
  for (let i = 0; i < recipes.length; i++) await rm(path.join(work, `stage-${i}`), { recursive: true, force: true });
  return writeImage(work, name, tag, layers);
}

// --- the crafted image ------------------------------------------------------------------

/** A POSIX ACL in the Linux VFS xattr format: version 2, then (tag, perm, id) sorted by tag. */
export function posixAcl(entries: [tag: 'user_obj' | 'user' | 'group_obj' | 'group' | 'mask' | 'other', perm: number, id?: number][]): Uint8Array {
  const TAG = { user_obj: 1, user: 2, group_obj: 4, group: 8, mask: 0x10, other: 0x20 };
  const out = Buffer.alloc(4 + 8 * entries.length);
  out.writeUInt32LE(2, 0);
  entries.forEach(([tag, perm, id], i) => {
    out.writeUInt16LE(TAG[tag], 4 + 8 * i);
    out.writeUInt16LE(perm, 6 + 8 * i);
    out.writeUInt32LE(id ?? 0xffffffff, 8 + 8 * i);
  });
  return out;
}

/** security.capability v2 granting `bits` (CAP_NET_RAW = 13 …) permitted + effective. */
export function fileCaps(bits: number[]): Uint8Array {
  const out = Buffer.alloc(20);
  out.writeUInt32LE(0x02000001, 0); // VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
  for (const bit of bits) {
    const word = 4 + (bit >= 32 ? 8 : 0);
    out.writeUInt32LE((out.readUInt32LE(word) | (1 << (bit % 32))) >>> 0, word);
  }
  return out;
}

/** The 5,000-entry directory of the crafted image (indexed lookups are checked in it). */
export const MANY_DIR = 'many';
export const MANY_COUNT = 5000;

const target = (n: number) => `t${'x'.repeat(n - 1)}`;

function craftedRecipes(): LayerRecipe[] {
  const MiB = 1 << 20;
  const l1: StageEntry[] = [
    dir('files', { mtime: [1600000100, 5] }),
    file('files/empty', ''),
    file('files/one', 'x'),
    file('files/block', { seed: 'block', size: 4096 }),
    file('files/big', { seed: 'big', size: MiB + 1 }),
    file('files/zeros', Buffer.alloc(12288)), // dense zeros: written, not holes
    sparse('files/sparse', 10 * MiB, [[0, 4096, 's0'], [5 * MiB, 8192, 's1'], [10 * MiB - 100, 100, 's2']]),
    file('files/setuid', { seed: 'suid', size: 100 }, { mode: 0o4755 }),
    file('files/setgid', { seed: 'sgid', size: 100 }, { mode: 0o2755, gid: 50 }),
    file('files/sticky', 'sticky', { mode: 0o1644 }),
    file('files/nomode', 'secret', { mode: 0o000 }),
    file('files/bigids', 'ids', { uid: 70000, gid: 1000000 }),
    file('files/hugeids', 'ids', { uid: 4000000000, gid: 3000000000 }),
    file('files/t-nsec', 'n', { mtime: [1000000000, 123456789] }),
    file('files/t-1960', 'o', { mtime: [-315619200, 500000000] }),
    file('files/t-2100', 'f', { mtime: [4102444800, 1] }),
    file('files/t-2200', 'f', { mtime: [7258118400, 999999999] }), // past 2106; umoci (Go UnixNano) cannot go past 2262
    file('files/hl-a', { seed: 'hl', size: 5000 }, { uid: 7 }),
    hardlink('files/hl-b', 'files/hl-a'),
    file('files/lower-target', { seed: 'lower', size: 3000 }),
    dir('dirs'),
    dir('dirs/private', { mode: 0o700 }),
    dir('dirs/sticky', { mode: 0o1777 }),
    dir('dirs/setgid', { mode: 0o2775, uid: 1000, gid: 1000 }),
    dir('links'),
    symlink('links/short', 'a'),
    symlink('links/s59', target(59)),
    symlink('links/s60', target(60)),
    symlink('links/s61', target(61)),
    symlink('links/s4000', `${'d/'.repeat(1999)}tt`),
    symlink('links/dangling', 'does/not/exist'),
    symlink('links/absolute', '/etc/passwd'),
    symlink('links/owned', '../files/one', { uid: 33, gid: 33, mtime: [1234567890, 42] }),
    dir('devs'),
    device('devs/null', 'chr', 1, 3, { mode: 0o666 }),
    device('devs/sda', 'blk', 8, 0, { mode: 0o660, gid: 6 }),
    device('devs/huge', 'chr', 4095, 1048575),
    fifo('devs/fifo'),
    dir('long'),
    dir(`long/${'d'.repeat(100)}`),
    file(`long/${'d'.repeat(100)}/${'f'.repeat(120)}`, 'pax path'),
    file(`long/${'n'.repeat(255)}`, 'longest name'),
    dir('names'),
    file(Buffer.from('names/\xff\xfe-latin1-caf\xe9', 'latin1'), 'not utf-8'),
    file('names/日本語', 'utf-8'),
    file('names/with space', 's'),
    file('names/new\nline', 'nl'),
    dir('xattrs'),
    file('xattrs/user', 'u', { xattrs: { 'user.foo': 'bar', 'user.empty': '', 'user.big': 'B'.repeat(3000) } }),
    file('xattrs/trusted', 't', { xattrs: { 'trusted.t': 'x' } }),
    file('xattrs/cap', { seed: 'cap', size: 64 }, { mode: 0o755, xattrs: { 'security.capability': fileCaps([13, 10]) } }),
    file('xattrs/acl', 'acl', { mode: 0o774, xattrs: { 'system.posix_acl_access': posixAcl([['user_obj', 7], ['user', 7, 1234], ['group_obj', 5], ['mask', 7], ['other', 4]]) } }),
    dir('xattrs/acldir', { mode: 0o775, xattrs: { 'system.posix_acl_default': posixAcl([['user_obj', 7], ['group_obj', 5], ['group', 7, 4321], ['mask', 7], ['other', 5]]) } }),
    dir('replace'),
    file('replace/file-to-dir', 'was a file'),
    dir('replace/dir-to-file'),
    file('replace/dir-to-file/a', 'a'),
    dir('replace/dir-to-file/sub'),
    file('replace/dir-to-file/sub/b', 'b'),
    dir('replace/dir-to-symlink'),
    file('replace/dir-to-symlink/c', 'c'),
    symlink('replace/symlink-to-dir', '../files'),
    file('replace/file-to-symlink', 'f'),
    dir('del'),
    file('del/file', 'deleted by layer 2'),
    dir('del/dir'),
    file('del/dir/x', 'x'),
    dir('del/dir/sub'),
    file('del/dir/sub/z', 'z'),
    file('del/later', 'deleted by layer 3'),
    file('del/kept', 'kept'),
    dir('opq'),
    file('opq/old1', 'old'),
    dir('opq/olddir'),
    file('opq/olddir/x', 'x'),
    dir('opq2'),
    file('opq2/old2', 'old'),
    dir(MANY_DIR),
    ...Array.from({ length: MANY_COUNT }, (_, i) => file(`${MANY_DIR}/f${String(i).padStart(5, '0')}`, i % 100 === 0 ? `entry ${i}\n` : '')),
  ];
  const l2: StageEntry[] = [
    dir('gnulong'),
    file(`gnulong/${'g'.repeat(150)}`, 'GNU longname'),
    symlink('gnulong/longtarget', `${'k'.repeat(150)}`),
    file('gnulong/plain', { seed: 'gnu', size: 70000 }),
    dir('del', { mtime: [1600000200, 0] }),
    whiteout('del/file'),
    whiteout('del/dir'),
    dir('replace', { mtime: [1600000200, 0] }),
    dir('replace/file-to-dir'),
    file('replace/file-to-dir/child', 'child'),
    file('replace/dir-to-file', 'now a file'),
    symlink('replace/dir-to-symlink', '../files/one'),
    dir('replace/symlink-to-dir'),
    file('replace/symlink-to-dir/inside', 'inside'),
    symlink('replace/file-to-symlink', 'dir-to-file'),
    dir('opq', { mtime: [1600000200, 0] }),
    opaque('opq'),
    file('opq/new1', 'new'),
    dir('opq2', { mtime: [1600000200, 0] }),
    file('opq2/-new2', 'new, archived before the marker'),
    opaque('opq2'),
    dir('files', { mtime: [1600000200, 0] }),
    file('files/one', 'yy'),
    file('files/block', { seed: 'block2', size: 4096 }, { mode: 0o600 }),
  ];
  const l3: StageEntry[] = [
    dir('del', { mtime: [1600000300, 0] }),
    whiteout('del/later'),
    dir('opq', { mtime: [1600000300, 0] }),
    whiteout('opq/new1'),
    whiteout('gnulong'),
    dir('dirs', { mtime: [1600000300, 0] }),
    dir('dirs/private', { mode: 0o750, mtime: [1600000300, 0] }),
    dir('xattrs', { mtime: [1600000300, 0] }),
    file('xattrs/user', 'u2', { xattrs: { 'user.new': 'value' } }),
    dir(MANY_DIR, { mtime: [1600000300, 0] }),
    whiteout(`${MANY_DIR}/f00000`),
    file(`${MANY_DIR}/f04999`, 'replaced'),
    file(`${MANY_DIR}/g-new`, 'added'),
  ];
  // Python tarfile: hardlinks to lower layers' files, which GNU tar cannot write from a tree.
  const l4 = `
import sys, tarfile, io
stage, out = sys.argv[1], sys.argv[2]
with tarfile.open(out, 'w', format=tarfile.PAX_FORMAT) as t:
    def add(ti, data=None):
        ti.mtime, ti.uname, ti.gname = 1600000400, '', ''
        t.addfile(ti, io.BytesIO(data) if data is not None else None)
    d = tarfile.TarInfo('hardlinks'); d.type, d.mode = tarfile.DIRTYPE, 0o755; add(d)
    for name, target in [('hardlinks/to-lower', 'files/lower-target'), ('hardlinks/third', 'files/hl-b')]:
        h = tarfile.TarInfo(name); h.type, h.linkname = tarfile.LNKTYPE, target; add(h)
    f = tarfile.TarInfo('hardlinks/new-a'); f.size, f.mode = 5, 0o640; add(f, b'new-a')
    h = tarfile.TarInfo('hardlinks/new-b'); h.type, h.linkname = tarfile.LNKTYPE, 'hardlinks/new-a'; add(h)
`;
  return [
    { entries: l1, format: 'pax', compression: 'gzip', dotSlash: true, root: { mode: 0o755, mtime: [1600000000, 0] } },
    { entries: l2, format: 'gnu', compression: 'zstd' },
    { entries: l3, format: 'pax', compression: 'none', dotSlash: true, root: { mode: 0o751, mtime: [1600000300, 0] } },
    { entries: [], format: 'pax', compression: 'gzip', python: l4 },
  ];
}

/** The crafted image (4 layers, ~1.5 MiB) in `dir`: `oci:DIR/oci:crafted` and `docker-archive:DIR/crafted.docker.tar`. */
export function craftedImage(dir: string): Promise<BuiltImage> {
  return build(dir, 'crafted', 'crafted', craftedRecipes());
}

// --- the realistic image ----------------------------------------------------------------

/**
 * Host paths under `roots` (relative to "/"), parents first, names in byte order, regular files
 * only while their sizes fit `budget` bytes (one file at most a quarter of it), at most
 * `maxPerDir` entries of one directory. Deterministic for a given machine.
 */
export function hostTree(roots: string[], budget: number, opts: { maxPerDir?: number; skip?: (rel: string) => boolean } = {}): { paths: string[]; files: string[]; bytes: number } {
  const paths: string[] = [];
  const files: string[] = [];
  let bytes = 0;
  const seen = new Set<string>();
  const inodes = new Set<string>();
  const addParents = (rel: string) => {
    const parts = rel.split('/');
    for (let i = 1; i < parts.length; i++) {
      const p = parts.slice(0, i).join('/');
      if (!seen.has(p)) seen.add(p), paths.push(p);
    }
  };
  const walk = (rel: string) => {
    const names = readdirSync(`/${rel}`).sort((a, c) => Buffer.compare(Buffer.from(a), Buffer.from(c)));
    let taken = 0;
    for (const n of names) {
      if (taken >= (opts.maxPerDir ?? Infinity) || bytes >= budget) return;
      const r = `${rel}/${n}`;
      if (opts.skip?.(r)) continue;
      const st = lstatSync(`/${r}`);
      if (st.isFile()) {
        // A hardlinked file is archived once (mesa's drivers are one inode under many names).
        const inode = `${st.dev}:${st.ino}`;
        const cost = inodes.has(inode) ? 0 : st.size;
        if (st.size > budget / 4 || bytes + cost > budget) continue;
        bytes += cost;
        inodes.add(inode);
        files.push(r);
      } else if (!st.isDirectory() && !st.isSymbolicLink()) continue;
      addParents(r);
      seen.add(r);
      paths.push(r);
      taken++;
      if (st.isDirectory()) walk(r);
    }
  };
  for (const root of roots) {
    addParents(`${root}/x`);
    walk(root);
  }
  return { paths, files, bytes };
}

export interface RealisticOptions {
  /**
   * Bytes to take from the host trees (default 64 MiB): about the image's tar bytes while the
   * trees last; man pages and /etc run out first (here 512 gives 417 MiB, 650 gives 526 MiB
   * in 10 layers, built in 26 s).
   */
  sizeMiB?: number;
  /** Layers (≥ 5, default 5); each one past 5 overwrites and deletes a little more. */
  layers?: number;
}

/** /etc entries that change while the machine runs (users added by tests, resolver, caches). */
const VOLATILE_ETC = /^etc\/(passwd|shadow|group|gshadow|subuid|subgid|\.pwd\.lock|hostname|hosts|resolv\.conf|mtab|adjtime|ld\.so\.cache|machine-id|docker|ssh\/ssh_host_.*)(-|$)/;

/**
 * A multi-layer image from this machine's system trees: real shared libraries (zstd), man
 * pages (2,000 entries in one directory), docs and locales (gzip), /etc (plain), then layers
 * that delete (whiteouts, an opaque directory), overwrite, and replace a directory by a file.
 * Built in about 5 s at the default 64 MiB.
 */
export async function realisticImage(work: string, opts: RealisticOptions = {}): Promise<BuiltImage> {
  const size = (opts.sizeMiB ?? 64) << 20;
  const libs = hostTree(['usr/lib/x86_64-linux-gnu'], size * 0.5, { skip: (r) => r.split('/').length > 5 });
  const man = hostTree(['usr/share/man/man1'], size * 0.1, { maxPerDir: 2000 });
  const docs = hostTree(['usr/share/doc'], size * 0.12);
  const locale = hostTree(['usr/share/locale'], size * 0.15);
  const etc = hostTree(['etc'], size * 0.04, { skip: (r) => VOLATILE_ETC.test(r) });
  const docDirs = docs.paths.filter((p) => p.split('/').length === 4 && lstatSync(`/${p}`).isDirectory());
  const T: Time = [1700000000, 0];
  const recipes: LayerRecipe[] = [
    { entries: [], hostPaths: libs.paths, format: 'pax', compression: 'zstd' },
    { entries: [], hostPaths: [...new Set([...man.paths, ...docs.paths, ...locale.paths])], format: 'pax', compression: 'gzip' },
    { entries: [], hostPaths: etc.paths, format: 'pax', compression: 'none' },
  ];
  // Layer 3: delete every 10th library and one doc directory, overwrite every 7th library,
  // make one doc directory opaque with a new child.
  const parentsOf = (list: string[]) => [...new Set(list.map((p) => path.posix.dirname(p)))].sort().map((p) => dir(p, { mtime: T }));
  const top = libs.files.filter((p) => p.split('/').length === 4);
  const deleted = top.filter((_, i) => i % 10 === 3);
  const overwritten = top.filter((_, i) => i % 7 === 5 && i % 10 !== 3);
  recipes.push({
    format: 'pax',
    compression: 'gzip',
    entries: [
      // Not the whited-out directory itself: a whiteout hides only lower layers' entries.
      ...parentsOf([...deleted, ...overwritten, docDirs[0]!, `${docDirs[1]}/x`]),
      ...deleted.map((p) => whiteout(p)),
      ...overwritten.map((p, i) => file(p, { seed: `over-${p}`, size: (lstatSync(`/${p}`).size >> 1) + i }, { mode: 0o755, mtime: T })),
      whiteout(docDirs[0]!),
      opaque(docDirs[1]!),
      file(`${docDirs[1]}/replaced-doc`, 'the old docs were removed by an opaque marker\n', { mtime: T }),
    ],
  });
  // Layer 4: an application tree of real files (copies of man pages under new names), a file
  // of layer 3 deleted again, and a library directory replaced by a file.
  const app = man.files.slice(0, 200);
  const libDir = libs.paths.find((p) => p.split('/').length === 4 && lstatSync(`/${p}`).isDirectory());
  recipes.push({
    format: 'pax',
    compression: 'zstd',
    entries: [
      dir('opt', { mtime: T }),
      dir('opt/app', { mtime: T }),
      ...app.map((p, i) => copyOf(`opt/app/${i}-${path.posix.basename(p)}`, `/${p}`, { mtime: T })),
      ...parentsOf([overwritten[0]!, ...(libDir ? [libDir] : [])]),
      whiteout(overwritten[0]!),
      ...(libDir ? [file(libDir, 'a directory replaced by a file\n', { mtime: T })] : []),
    ],
  });
  for (let n = 5; n < (opts.layers ?? 5); n++) {
    const over = libs.files[(n * 13) % libs.files.length]!;
    const gone = man.files[(n * 17) % man.files.length]!;
    recipes.push({
      format: 'pax',
      compression: n % 2 ? 'gzip' : 'zstd',
      entries: [dir('etc', { mtime: T }), file(`etc/layer-${n}.conf`, `layer ${n}\n`, { mtime: T }), ...parentsOf([over, gone]), file(over, { seed: `layer-${n}`, size: 200_000 }, { mtime: T }), whiteout(gone)],
    });
  }
  const img = await build(work, 'realistic', 'realistic', recipes);
  return img;
}

/** Bytes of every layer's tar together (what the image holds uncompressed). */
export async function tarBytes(img: BuiltImage): Promise<number> {
  let n = 0;
  for (const l of img.layers) n += (await stat(l.tar)).size;
  return n;
}

/**
 * Small container images built in a test, the way image builders lay them out: layer tars made
 * by GNU tar from directory trees (reproducibly: sorted, mtime 0, numeric root owner), gzip or
 * zstd compressed by the real tools, an image config listing their diffIDs, and the image
 * written as an OCI layout (`oci:DIR`), or as `docker save` output (legacy `<id>/layer.tar` or
 * Docker 25's `blobs/sha256/…`) packed by GNU tar.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';

export type Compression = 'plain' | 'gzip' | 'zstd';

export interface BuiltLayer {
  /** The blob as stored (compressed or not). */
  blob: Buffer;
  digest: string;
  /** sha256 of the uncompressed tar. */
  diffId: string;
  compression: Compression;
  mediaType: string;
}

export function sha256(b: Uint8Array | string): string {
  return 'sha256:' + createHash('sha256').update(b).digest('hex');
}

/** A tree to put in a layer: path → content (string/Buffer: a file; null: a directory; {symlink}). */
export type Tree = Record<string, string | Buffer | null | { symlink: string } | { mode: number; data: string }>;

/** Writes `tree` under `dir` (directories made as needed). */
export async function writeTree(dir: string, tree: Tree): Promise<void> {
  for (const [p, v] of Object.entries(tree)) {
    const full = path.join(dir, p);
    if (v === null) {
      await mkdir(full, { recursive: true });
      continue;
    }
    await mkdir(path.dirname(full), { recursive: true });
    if (typeof v === 'string' || Buffer.isBuffer(v)) await writeFile(full, v);
    else if ('symlink' in v) await symlink(v.symlink, full);
    else await writeFile(full, v.data, { mode: v.mode });
  }
}

/** The uncompressed tar of `dir`'s contents, made by GNU tar reproducibly. */
export function tarOf(dir: string, names: string[] = ['.']): Buffer {
  return execFileSync(
    'tar',
    ['-C', dir, '--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '--format=posix', '--pax-option=delete=atime,delete=ctime', '-cf', '-', ...names],
    { maxBuffer: 1 << 30 },
  );
}

export function compress(tar: Buffer, c: Compression): Buffer {
  if (c === 'gzip') return execFileSync('gzip', ['-n', '-c'], { input: tar, maxBuffer: 1 << 30 });
  if (c === 'zstd') return execFileSync('zstd', ['-q', '-c'], { input: tar, maxBuffer: 1 << 30 });
  return tar;
}

const OCI_LAYER: Record<Compression, string> = {
  plain: 'application/vnd.oci.image.layer.v1.tar',
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
};

export function layer(tar: Buffer, c: Compression): BuiltLayer {
  const blob = compress(tar, c);
  return { blob, digest: sha256(blob), diffId: sha256(tar), compression: c, mediaType: OCI_LAYER[c] };
}

/**
 * An image config as builders write it (key order as docker's), with extra fields a converter
 * must carry over unchanged; `created` fixed so the image is reproducible.
 */
export function imageConfig(layers: readonly BuiltLayer[], extra: Record<string, unknown> = {}): Buffer {
  return Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['/bin/sh'], Labels: { 'org.example.z': '1', 'org.example.a': '<&>' } },
      created: '2024-01-02T03:04:05Z',
      history: layers.map((_, i) => ({ created: '2024-01-02T03:04:05Z', created_by: `step ${i}` })),
      os: 'linux',
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      ...extra,
    }),
  );
}

async function putBlob(dir: string, bytes: Uint8Array): Promise<string> {
  const digest = sha256(bytes);
  await mkdir(path.join(dir, 'blobs', 'sha256'), { recursive: true });
  await writeFile(path.join(dir, 'blobs', 'sha256', digest.slice(7)), bytes);
  return digest;
}

/** Writes an OCI layout with one image tagged `tag`; resolves the manifest digest. */
export async function writeOciLayout(dir: string, layers: readonly BuiltLayer[], opts: { tag?: string; config?: Buffer } = {}): Promise<string> {
  const config = opts.config ?? imageConfig(layers);
  for (const l of layers) await putBlob(dir, l.blob);
  const configDigest = await putBlob(dir, config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
      layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.blob.length })),
    }),
  );
  const digest = await putBlob(dir, manifest);
  await writeFile(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const index = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest, size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': opts.tag ?? 'latest' } }],
  };
  await writeFile(path.join(dir, 'index.json'), JSON.stringify(index));
  return digest;
}

export interface SavedImage {
  layers: readonly BuiltLayer[];
  tags: string[];
  config?: Buffer;
}

/**
 * Writes `docker save` output for `images` into the tar file `out` (staged under `work`):
 * `legacy` as Docker before 25 (`<config hex>.json`, `<id>/layer.tar`, a layer two images share
 * stored once and symlinked, `repositories`), else as Docker 25+ (`blobs/sha256/<hex>` for
 * every file, plus index.json and oci-layout).
 */
export async function writeDockerArchive(work: string, out: string, images: readonly SavedImage[], legacy: boolean): Promise<void> {
  await mkdir(work, { recursive: true });
  const list: { Config: string; RepoTags: string[]; Layers: string[] }[] = [];
  const stored = new Map<string, string>();
  for (const img of images) {
    const config = img.config ?? imageConfig(img.layers);
    const layers: string[] = [];
    let parent = '';
    for (const l of img.layers) {
      if (!legacy) {
        layers.push(`blobs/sha256/${(await putBlob(work, l.blob)).slice(7)}`);
        continue;
      }
      // Legacy layer ids chain like docker's v1 ids: a hash of the parent's and this layer's diffID.
      const id = createHash('sha256').update(`${parent} ${l.diffId}`).digest('hex');
      parent = id;
      const p = `${id}/layer.tar`;
      layers.push(p);
      await mkdir(path.join(work, id), { recursive: true });
      const first = stored.get(l.diffId);
      if (first && first !== p) await symlink(`../${first}`, path.join(work, p)).catch(() => {});
      else {
        await writeFile(path.join(work, p), l.blob);
        await writeFile(path.join(work, id, 'VERSION'), '1.0');
        stored.set(l.diffId, p);
      }
    }
    const configName = legacy ? `${sha256(config).slice(7)}.json` : `blobs/sha256/${(await putBlob(work, config)).slice(7)}`;
    if (legacy) await writeFile(path.join(work, configName), config);
    list.push({ Config: configName, RepoTags: img.tags, Layers: layers });
  }
  await writeFile(path.join(work, 'manifest.json'), JSON.stringify(list));
  if (legacy) await writeFile(path.join(work, 'repositories'), '{}');
  else {
    await writeFile(path.join(work, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    await writeFile(path.join(work, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [] }));
  }
  execFileSync('tar', ['-C', work, '--sort=name', '-cf', out, '.']);
}

export async function readJson(file: string): Promise<unknown> {
  return JSON.parse(await readFile(file, 'utf8'));
}

/**
 * Pushing layers as an image: each layer file becomes a blob the way the reference ships
 * it (tar-wrapped zfile: a plain LSMT layer is compressed and wrapped, a bare zfile is
 * wrapped), gets the overlaybd annotations, and goes up with a config and a manifest.
 * Blobs the target already has are skipped (or mounted from sibling repositories), so
 * pushing one new snapshot onto an existing image uploads only that layer.
 *
 * This is image composition (what each layer becomes, decided by the probe lists, and the
 * config and manifest naming them); src/remote only stores and transports the result.
 */
import { createHash } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { removeStaleTemps, tempPath } from '../io/atomic.ts';
import { InvalidArgumentError } from '../io/errors.ts';
import { FileSource } from '../io/file.ts';
import { MemorySource } from '../io/memory.ts';
import type { ByteSource } from '../io/types.ts';
import { ConcatSource } from '../io/concat.ts';
import { tarHeaderBlocks, tarTrailerSize } from '../zfile/tar.ts';
import { probeOuter } from './probe.ts';
import { compressFile, type ZFileWriterOptions } from '../zfile/writer.ts';
import { RemoteNotFoundError } from '../remote/errors.ts';
import { openRepository, resolveImage, type RemoteOptions } from '../remote/image.ts';
import { Annotation, encodeJson, hostPlatform, MediaType, OVERLAYBD_VERSION, sha256Digest, type Descriptor, type ImageManifest } from '../remote/manifest.ts';
import { formatReference, referenceTarget, resolveReference, DEFAULT_TAG, type ImageReference } from '../remote/reference.ts';
import type { PutBlobResult, Repository } from '../remote/store.ts';
import { buildTree, digestAndTree, publishEmptyConfig, publishReferrer, publishTree, type BuiltTree } from '../verity/publish.ts';
import { DEFAULT_CHUNK } from '../verity/tree.ts';

export type LayerKind = 'tar' | 'zfile' | 'lsmt';

export interface PreparedLayer {
  file: string;
  /** What the file was: already tar-wrapped, a bare zfile (wrapped here), or plain LSMT (compressed + wrapped). */
  kind: LayerKind;
  blob: ByteSource;
  digest: string;
  size: number;
  /** The verity tree, when it was built in the digest's read pass. */
  tree?: BuiltTree;
}

export interface PrepareOptions {
  /** Build the verity tree in the same read pass as the digest. */
  tree?: boolean;
  /** Wraps the blob before it is hashed and uploaded (see PushOptions.readThrough). */
  readThrough?: (blob: ByteSource) => ByteSource;
}

/**
 * Turns a layer file into the blob to push. Plain LSMT is compressed into `tmpDir` with
 * the zfile writer (tar-wrapped, header rewritten like `overlaybd-commit -z -t`).
 */
export async function prepareLayer(file: string, tmpDir: string, zopts: ZFileWriterOptions = {}, popts: PrepareOptions = {}): Promise<PreparedLayer> {
  let src: ByteSource = await FileSource.open(file);
  try {
    const kind: LayerKind = await probeOuter(src);
    if (kind === 'zfile') {
      src = new ConcatSource(`tar(${src.name})`, [new MemorySource(tarHeaderBlocks(src.size), 'tar header'), src, new MemorySource(new Uint8Array(tarTrailerSize(src.size)), 'tar trailer')]);
    } else if (kind === 'lsmt') {
      await src.close();
      const out = path.join(tmpDir, `${path.basename(file)}.${Date.now().toString(36)}.tar`);
      await compressFile(file, out, { algorithm: 'lz4', blockSize: 4096, crc: true, ...zopts, tar: true, overwriteHeader: true });
      src = await FileSource.open(out);
    }
    if (popts.readThrough) src = popts.readThrough(src);
    const chunk = popts.tree ? DEFAULT_CHUNK : undefined;
    const h = await digestAndTree(src, chunk);
    return { file, kind, blob: src, digest: h.digest, size: src.size, tree: h.tree };
  } catch (e) {
    await src.close();
    throw e;
  }
}

export interface PushOptions extends RemoteOptions {
  /** Put the layers on top of the image already at the reference (if there is one). */
  append?: boolean;
  /**
   * Put the layers on top of the image at this other tag or digest of the same repository
   * (e.g. the previous snapshot's), so only the new layers are prepared and uploaded.
   */
  base?: string;
  /** Repositories of the same registry to mount existing blobs from. */
  mountFrom?: string[];
  /** Value of the blob-fs-type annotation (e.g. ext4), when known. */
  fsType?: string;
  /** Compression for plain LSMT layers (default lz4, 4 KiB blocks, CRC on). */
  zfile?: ZFileWriterOptions;
  /** Publish a verity tree per new layer (docs/format.md §7; default true, `--no-verity` sets false). */
  verity?: boolean;
  /**
   * Called with the layers of the image being appended to (empty when there is none) before
   * anything is prepared or uploaded; throwing stops the push (e.g. a chain check).
   */
  checkBase?: (base: { repo: Repository; layers: readonly Descriptor[] }) => Promise<void>;
  /**
   * Wraps each new layer's blob before it is hashed and uploaded: a live snapshot's push
   * paces its reads (and so its upload) this way.
   */
  readThrough?: (blob: ByteSource) => ByteSource;
  onLayer?: (event: { file: string; digest: string; size: number; phase: 'prepared' | 'done'; result?: PutBlobResult }) => void;
  onProgress?: (sent: number, total: number) => void;
}

export interface PushResult {
  reference: string;
  digest: string;
  config: string;
  layers: Array<{ file: string | undefined; digest: string; size: number; kind: LayerKind | 'existing'; result: PutBlobResult }>;
}

function layerDescriptor(digest: string, size: number, fsType?: string): Descriptor {
  const annotations: Record<string, string> = {
    [Annotation.version]: OVERLAYBD_VERSION,
    [Annotation.blobDigest]: digest,
    [Annotation.blobSize]: String(size),
  };
  if (fsType) annotations[Annotation.fsType] = fsType;
  return { mediaType: MediaType.ociLayer, digest, size, annotations };
}

/** Builds the image config blob for layer blobs (uncompressed tar layers: diff_id = digest). */
export function imageConfig(layers: readonly Descriptor[]): Uint8Array {
  const p = hostPlatform();
  return encodeJson({ architecture: p.architecture, os: p.os, config: {}, rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) } });
}

/** Pushes `files` (bottom → top) as the image `ref`. */
export async function pushImage(files: readonly string[], ref: string | ImageReference, opts: PushOptions = {}): Promise<PushResult> {
  const r = await resolveReference(ref);
  const tag = r.tag ?? (r.digest ? undefined : DEFAULT_TAG);
  // Compressed layers wait here for their upload; a killed push's leftovers go first.
  const tmp = tempPath(path.join(os.tmpdir(), 'obd-push'));
  const opened = await openRepository(r, opts, true);
  const prepared: PreparedLayer[] = [];
  try {
    await removeStaleTemps(os.tmpdir(), 'obd-push');
    await mkdir(tmp, { mode: 0o700 });
    const repo = opened.repo;
    const base: Descriptor[] = [];
    if (opts.base !== undefined) {
      const b = await resolveReference(opts.base);
      if (!sameRepository(b, r)) throw new InvalidArgumentError(`base ${opts.base} is not in the repository of ${formatReference(r)}`);
      base.push(...(await resolveImage(repo, referenceTarget(b), opts.platform)).manifest.layers);
    } else if (opts.append) {
      try {
        base.push(...(await resolveImage(repo, referenceTarget(r), opts.platform)).manifest.layers);
      } catch (e) {
        if (!(e instanceof RemoteNotFoundError)) throw e;
      }
    }
    await opts.checkBase?.({ repo, layers: base });
    for (const f of files) {
      const p = await prepareLayer(f, tmp, opts.zfile, { tree: opts.verity !== false, readThrough: opts.readThrough });
      prepared.push(p);
      const again = base.findIndex((d) => d.digest === p.digest);
      if (again >= 0) {
        throw new InvalidArgumentError(`${f}: already layer ${again + 1} of ${base.length} of ${formatReference(r)} (digest ${p.digest}); nothing was appended`);
      }
      opts.onLayer?.({ file: f, digest: p.digest, size: p.size, phase: 'prepared' });
    }
    // Trees are built and uploaded while the layers upload: their hashing fills the waits.
    const described = prepared.map((p) => {
      const d = layerDescriptor(p.digest, p.size, opts.fsType);
      if (opts.verity === false) return Promise.resolve(d);
      return (p.tree ? Promise.resolve(p.tree) : buildTree(p.blob)).then((t) => publishTree(repo, d, t));
    });
    const early = opts.verity === false ? [] : [publishEmptyConfig(repo)];
    for (const d of [...described, ...early]) d.catch(() => {});
    const total = prepared.reduce((a, p) => a + p.size, 0);
    let sentBefore = 0;
    const layers: PushResult['layers'] = base.map((d) => ({ file: undefined, digest: d.digest, size: d.size, kind: 'existing' as const, result: 'exists' as const }));
    for (const p of prepared) {
      const result = await repo.putBlob(p.digest, p.blob, { mountFrom: opts.mountFrom, onProgress: (n) => opts.onProgress?.(sentBefore + n, total) });
      sentBefore += p.size;
      opts.onProgress?.(sentBefore, total);
      opts.onLayer?.({ file: p.file, digest: p.digest, size: p.size, phase: 'done', result });
      layers.push({ file: p.file, digest: p.digest, size: p.size, kind: p.kind, result });
    }
    const descs = [...base, ...(await Promise.all(described))];
    await Promise.all(early);
    const { digest, config } = await putImage(repo, descs, tag, (m) => publishReferrer(repo, m, descs));
    return { reference: formatReference(r), digest, config, layers };
  } catch (e) {
    await opened.abandon();
    throw e;
  } finally {
    for (const p of prepared) await p.blob.close().catch(() => {});
    await rm(tmp, { recursive: true, force: true });
    await opened.close();
  }
}

/** Whether two references name the same repository (registry host + name, or layout path). */
export function sameRepository(a: ImageReference, b: ImageReference): boolean {
  if (a.kind !== b.kind) return false;
  if (a.kind === 'registry' && b.kind === 'registry') return a.registry === b.registry && a.repository === b.repository;
  return a.kind !== 'registry' && b.kind !== 'registry' && path.resolve(a.path) === path.resolve(b.path);
}

/**
 * Uploads the config for `layers` and the manifest naming them; resolves the manifest digest.
 * `alongside` (what refers to the manifest: its verity referrer) runs while they go up.
 */
export async function putImage(
  repo: Repository,
  layers: Descriptor[],
  tag: string | undefined,
  alongside?: (manifest: Descriptor) => Promise<unknown>,
): Promise<{ digest: string; config: string }> {
  const configBytes = imageConfig(layers);
  const configDigest = 'sha256:' + createHash('sha256').update(configBytes).digest('hex');
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: configDigest, size: configBytes.length },
    layers,
  };
  const bytes = encodeJson(manifest);
  const [digest] = await Promise.all([
    repo.putBlob(configDigest, new MemorySource(configBytes, 'image config')).then(() => repo.putManifest(bytes, MediaType.ociManifest, tag)),
    alongside?.({ mediaType: MediaType.ociManifest, digest: sha256Digest(bytes), size: bytes.length }),
  ]);
  return { digest, config: configDigest };
}

/**
 * `obd convert`: an OCI (or Docker) image in, an overlaybd image out (docs/convert.md).
 * Per source layer, bottom first: its tar is streamed (and verified: blob digest, diffID)
 * into the layer engine over a writable layer stacked on the layers converted so far, the
 * result is committed as a tar-wrapped zfile (layer.ts) and uploaded while the next layer
 * converts. Layers already in the cache (`cacheDir`, keyed by chainID) are not converted
 * again. Last the config (the source's, with the new diff_ids) and the manifest go up.
 *
 * Nothing is taken from the clock, the host or the order of a hash table, so the same source
 * gives the same bytes everywhere. The work directory (writable layers, blobs not cached) is
 * removed at the end; a destination is only tagged once everything else is in place, and an
 * OCI layout the conversion created is removed again when it fails.
 */
import { link, mkdir, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { commitTemp, removeStaleTemps, tempPath } from '../io/atomic.ts';
import { InvalidArgumentError, NotFoundError } from '../io/errors.ts';
import { FileSource } from '../io/file.ts';
import { MemorySource } from '../io/memory.ts';
import { openLayerFile, type OpenedLayer } from '../image/open.ts';
import { Stack } from '../lsmt/stack.ts';
import { openRepository, type RemoteOptions } from '../remote/image.ts';
import { MediaType, sha256Digest, type Descriptor } from '../remote/manifest.ts';
import { DEFAULT_TAG, formatReference, resolveReference, type ImageReference } from '../remote/reference.ts';
import type { PutBlobResult, Repository } from '../remote/store.ts';
import { ConvertCache, fileDigest, type CachedLayer } from './cache.ts';
import { replaceDiffIds } from './config.ts';
import { defaultEngine, type EngineStats, type LayerEngine } from './engine.ts';
import { chainIds, fsIdentity, uuidOfChainId } from './identity.ts';
import { buildLayer } from './layer.ts';
import { layerDescriptor, manifestBytes } from './output.ts';
import { layerStream, openSource, type SourceImage } from './source.ts';

/** 64 GiB, the reference convertor's default (`--vsize 64`). */
export const DEFAULT_VSIZE = 64 * 2 ** 30;

export interface ConvertOptions extends RemoteOptions {
  /** Virtual disk size in bytes, a multiple of 4096 (default 64 GiB). */
  vsize?: number;
  /** Keep converted layers here and reuse them (keyed by chainID; see cache.ts). */
  cacheDir?: string;
  /** Where the work directory goes (default: beside a local destination, else the system temp dir). */
  tmpDir?: string;
  /** ZFile codec (default lz4), block size (default 4 KiB) and compression threads (output identical for any count). */
  algorithm?: 'lz4' | 'zstd';
  blockSize?: number;
  threads?: number;
  /** More repositories of the destination registry to mount blobs from. */
  mountFrom?: string[];
  /** Source blob bytes read (or skipped, for cached layers) so far, of the total. */
  onProgress?: (done: number, total: number) => void;
  /** Told about each layer once it is converted (or found in the cache) and once it is pushed. */
  onLayer?: (layer: ConvertedLayer, phase: 'converted' | 'pushed') => void;
  /** The filesystem step (default: the ext4 engine). */
  engine?: LayerEngine;
}

export interface ConvertedLayer {
  index: number;
  /** The source layer: its blob digest, diffID and chainID. */
  source: string;
  diffId: string;
  chainId: string;
  uuid: string;
  parentUuid: string;
  /** The overlaybd layer blob. */
  digest: string;
  size: number;
  cached: boolean;
  /** How the destination got the blob (set once pushed). */
  pushed?: PutBlobResult;
  /** Milliseconds converting took (0 for a cache hit). */
  ms: number;
  /** Uncompressed tar bytes, the committed LSMT layer's bytes, and the engine's counts. */
  tarBytes?: number;
  lsmtBytes?: number;
  engine?: EngineStats;
}

export interface ConvertResult {
  source: string;
  sourceDigest: string;
  reference: string;
  digest: string;
  mediaType: string;
  config: string;
  vsize: number;
  layers: ConvertedLayer[];
  cacheHits: number;
  ms: number;
}

function checkOptions(o: ConvertOptions): { vsize: number; algorithm: 'lz4' | 'zstd'; blockSize: number; threads: number } {
  const vsize = o.vsize ?? DEFAULT_VSIZE;
  if (!Number.isSafeInteger(vsize) || vsize <= 0 || vsize % 4096 !== 0) throw new InvalidArgumentError(`--vsize ${vsize}: the virtual size must be a positive multiple of 4 KiB`);
  const algorithm = o.algorithm ?? 'lz4';
  if (algorithm !== 'lz4' && algorithm !== 'zstd') throw new InvalidArgumentError(`--algorithm ${String(algorithm)}: lz4 or zstd`);
  const blockSize = o.blockSize ?? 4096;
  if (![4096, 8192, 16384, 32768, 65536].includes(blockSize)) throw new InvalidArgumentError(`--block-size ${blockSize}: a power of two from 4K to 64K`);
  const threads = o.threads ?? Math.min(4, os.availableParallelism());
  if (!Number.isInteger(threads) || threads < 1 || threads > 256) throw new InvalidArgumentError(`--threads ${threads}: 1..256`);
  return { vsize, algorithm, blockSize, threads };
}

/** Refuses a destination that cannot take the result, or that is the source itself. */
function checkDestination(s: ImageReference, t: ImageReference): void {
  if (t.kind === 'docker-archive') throw new InvalidArgumentError(`${formatReference(t)}: docker archives are read, not written; write oci-archive:FILE or oci:DIR`);
  if (t.digest) throw new InvalidArgumentError(`${formatReference(t)}: the converted image's digest is not known before it is made; give the destination a tag`);
  const same = s.kind === t.kind && (s.kind === 'registry' && t.kind === 'registry' ? s.host === t.host && s.repository === t.repository : s.kind !== 'registry' && t.kind !== 'registry' && path.resolve(s.path) === path.resolve(t.path));
  if (same && (s.tag ?? DEFAULT_TAG) === (t.tag ?? DEFAULT_TAG)) throw new InvalidArgumentError(`${formatReference(t)}: the destination is the source image; give another tag or place (the source is never overwritten)`);
}

/** Converts `source` into the overlaybd image `dest` (see the file comment). */
export async function convertImage(source: string | ImageReference, dest: string | ImageReference, opts: ConvertOptions = {}): Promise<ConvertResult> {
  const t0 = performance.now();
  const o = checkOptions(opts);
  const s = await resolveReference(source);
  const t = await resolveReference(dest);
  checkDestination(s, t);
  const engine = opts.engine ?? (await defaultEngine());
  const base = await workBase(opts.tmpDir, t);
  await removeStaleTemps(base, 'obd-convert');
  const work = tempPath(path.join(base, 'obd-convert'));
  const src = await openSource(s, opts);
  const opened: OpenedLayer[] = [];
  let to: Awaited<ReturnType<typeof openRepository>> | undefined;
  // Uploads run one after another, each while the next layer converts; a failure stops the conversion.
  let uploads: Promise<void> = Promise.resolve();
  let uploadFailure: unknown;
  try {
    await mkdir(work, { mode: 0o700 });
    const cache = opts.cacheDir ? await ConvertCache.open(opts.cacheDir) : undefined;
    to = await openRepository(t, opts, true);
    const repo = to.repo;
    const destRepo = t.kind === 'registry' ? `${t.host}/${t.repository}` : undefined;
    const chain = chainIds(src.diffIds);
    const fs = fsIdentity(chain[0]!, o.vsize);
    const layers = src.manifest.layers;
    const total = layers.reduce((a, d) => a + d.size, 0);
    let done = 0;
    const progress = (n: number) => {
      done += n;
      opts.onProgress?.(done, total);
    };
    const files: string[] = [];
    const result: ConvertedLayer[] = [];
    const identity = (i: number) => ({
      index: i,
      source: layers[i]!.digest,
      diffId: src.diffIds[i]!,
      chainId: chain[i]!,
      uuid: uuidOfChainId(chain[i]!),
      parentUuid: i === 0 ? '' : uuidOfChainId(chain[i - 1]!),
    });

    /** Converts layer `i` over the layers before it into `out`. */
    const convertLayer = async (i: number, out: string): Promise<ConvertedLayer> => {
      const t1 = performance.now();
      const id = identity(i);
      // The layers below, each opened once, are the lower device of this one.
      for (let j = opened.length; j < i; j++) opened.push(await openLayerFile(files[j]!));
      const lower = i === 0 ? undefined : new Stack(opened.slice(0, i), { ownsSources: false, name: `${src.reference} layers 0..${i - 1}` });
      const stream = layerStream(src, i, progress);
      try {
        const built = await buildLayer({ ...o, engine, tar: stream.tar, name: `${src.reference} layer ${i}`, work: path.join(work, `rw-${i}`), out, uuid: id.uuid, parentUuid: id.parentUuid, lower, fs });
        const tarBytes = await stream.verify();
        const digest = await fileDigest(out);
        return { ...id, digest, size: built.blobBytes, cached: false, ms: Math.round(performance.now() - t1), tarBytes, lsmtBytes: built.lsmtBytes, engine: built.engine };
      } catch (e) {
        await stream.close();
        throw e;
      } finally {
        await lower?.close();
      }
    };

    for (let i = 0; i < layers.length; i++) {
      if (uploadFailure) throw uploadFailure;
      const key = ConvertCache.key({ chainId: chain[i]!, vsize: o.vsize, algorithm: o.algorithm, blockSize: o.blockSize, engine: engine.version });
      const hit = await cache?.get(key);
      let layer: ConvertedLayer;
      if (hit) {
        files.push(hit.blob);
        progress(layers[i]!.size);
        layer = { ...identity(i), digest: hit.layer.digest, size: hit.layer.size, cached: true, ms: 0 };
      } else if (cache) {
        const staged = await cache.stage(key);
        try {
          layer = await convertLayer(i, staged.blob);
          files.push((await cache.commit(key, staged, cachedLayer(layer, o, engine.version))).blob);
        } catch (e) {
          await cache.discard(staged);
          throw e;
        }
      } else {
        files.push(path.join(work, `layer-${i}.tar`));
        layer = await convertLayer(i, files[i]!);
      }
      result.push(layer);
      opts.onLayer?.(layer, 'converted');
      const file = files[i]!;
      uploads = uploads.then(async () => {
        if (uploadFailure) return;
        try {
          const mountFrom = [...(opts.mountFrom ?? []), ...(cache && destRepo ? sameRegistry(await cache.pushedTo(key), t) : [])];
          layer.pushed = await putFile(repo, layer.digest, file, mountFrom);
          if (cache && destRepo) await cache.recordPush(key, destRepo);
          opts.onLayer?.(layer, 'pushed');
        } catch (e) {
          uploadFailure = e;
        }
      });
    }
    await uploads;
    if (uploadFailure) throw uploadFailure;

    const configBytes = replaceDiffIds(src.config, result.map((l) => l.digest), `${src.reference} config ${src.manifest.config.digest}`);
    const config: Descriptor = { mediaType: src.manifest.config.mediaType, digest: sha256Digest(configBytes), size: configBytes.length };
    await repo.putBlob(config.digest, new MemorySource(configBytes, 'image config'));
    const manifest = manifestBytes(src.manifest, src.docker, config, result.map((l) => layerDescriptor(l.digest, l.size, src.docker)));
    const mediaType = src.docker ? MediaType.dockerManifest : MediaType.ociManifest;
    const digest = await repo.putManifest(manifest, mediaType, t.tag ?? DEFAULT_TAG);
    await to.close();
    to = undefined;
    return {
      source: src.reference,
      sourceDigest: src.digest,
      reference: formatReference(t),
      digest,
      mediaType,
      config: config.digest,
      vsize: o.vsize,
      layers: result,
      cacheHits: result.filter((l) => l.cached).length,
      ms: Math.round(performance.now() - t0),
    };
  } catch (e) {
    // Nothing may still read the work files or write the destination while they go.
    await uploads;
    await to?.abandon().catch(() => {});
    throw e;
  } finally {
    await to?.close().catch(() => {});
    for (const l of opened) await l.source.close().catch(() => {});
    await src.close();
    await rm(work, { recursive: true, force: true });
  }
}

/** Where the work directory goes: --tmp-dir, else beside a local destination (when its directory exists), else the temp dir. */
async function workBase(tmpDir: string | undefined, t: ImageReference): Promise<string> {
  const isDir = (d: string) => stat(d).then((st) => st.isDirectory(), () => false);
  if (tmpDir !== undefined) {
    if (!(await isDir(tmpDir))) throw new NotFoundError(`--tmp-dir ${tmpDir}: no such directory`);
    return path.resolve(tmpDir);
  }
  const beside = t.kind === 'registry' ? undefined : path.dirname(path.resolve(t.path));
  return beside && (await isDir(beside)) ? beside : os.tmpdir();
}

function cachedLayer(l: ConvertedLayer, o: { vsize: number; algorithm: string; blockSize: number }, engine: string): CachedLayer {
  const stats: Record<string, number> = { ms: l.ms, tarBytes: l.tarBytes ?? 0, lsmtBytes: l.lsmtBytes ?? 0, ...l.engine };
  return { chainId: l.chainId, vsize: o.vsize, algorithm: o.algorithm, blockSize: o.blockSize, engine, diffId: l.diffId, uuid: l.uuid, parentUuid: l.parentUuid, digest: l.digest, size: l.size, stats };
}

/** The repositories (`host/name`) of the destination's registry among `repos`, as names there. */
function sameRegistry(repos: readonly string[], t: ImageReference): string[] {
  if (t.kind !== 'registry') return [];
  return repos.filter((r) => r.startsWith(`${t.host}/`)).map((r) => r.slice(t.host.length + 1)).filter((r) => r !== t.repository);
}

/**
 * Uploads a blob whose digest is known good. Into a layout (blob files) on the same file
 * system it is hard-linked, not copied: a committed blob is never written again.
 */
async function putFile(repo: Repository, digest: string, file: string, mountFrom: string[]): Promise<PutBlobResult> {
  const target = repo.blobPath?.(digest);
  if (target) {
    if ((await repo.statBlob(digest)) !== undefined) return 'exists';
    const tmp = tempPath(target);
    try {
      await mkdir(path.dirname(target), { recursive: true });
      await link(file, tmp);
      await commitTemp(tmp, target);
      return 'uploaded';
    } catch {
      await rm(tmp, { force: true });
    }
  }
  const blob = await FileSource.open(file);
  try {
    return await repo.putBlob(digest, blob, { mountFrom });
  } finally {
    await blob.close();
  }
}

export type { SourceImage };

/**
 * From a reference to layer sources: open the repository (registry or OCI layout), resolve
 * tag → manifest (index → platform), and give each layer blob as a ByteSource, bottom to
 * top. Registry layers are lazy sources over the disk cache (or a memory LRU).
 */
import path from 'node:path';
import { MeteredSource, type RequestMeter } from '../io/metrics.ts';
import { sharedBlobOf, type Lease, type SharedResources } from '../io/shared.ts';
import type { ByteSource } from '../io/types.ts';
import { CredentialStore } from './auth.ts';
import { BlobCache } from './cache.ts';
import { InvalidReferenceError } from './errors.ts';
import { LazySource } from './lazy-source.ts';
import { hostPlatform, isIndex, parseIndex, parseManifest, selectPlatform, type Descriptor, type FetchedManifest, type ImageManifest, type Platform } from './manifest.ts';
import { resolveReference, referenceTarget, formatReference, type ImageReference } from './reference.ts';
import { RegistryClient, type RegistryOptions } from './registry.ts';
import type { Repository } from './store.ts';
import { layerVerity } from '../verity/annotations.ts';
import { requireTree, verifyLayer } from '../verity/open.ts';

export interface RemoteOptions extends RegistryOptions {
  /** Credentials file in docker config.json / cred.json shape (`--creds-file`). */
  credsFile?: string;
  /** Docker config path; false skips ~/.docker/config.json. */
  dockerConfig?: string | false;
  /** Platform to pick from an image index (default linux/<this arch>). */
  platform?: Platform;
}

export interface LazyOptions {
  /** A shared cache, or a directory to open one in (`--cache-dir`). */
  cache?: BlobCache;
  cacheDir?: string;
  /** Cache capacity in bytes (`--cache-size`, default 4 GiB). */
  cacheSize?: number;
  /** Refill unit (default 256 KiB). */
  refill?: number;
  /** Concurrent fetches per layer (default 8). */
  maxInflight?: number;
  /** Refuse layers without a verity tree (docs/format.md §7.3). */
  requireVerity?: boolean;
  /** Counts and times the blob reads of registry layers (a server's metrics). */
  meter?: RequestMeter;
  /**
   * Share layer blobs (by digest), repository clients and disk caches with every other open
   * through the same pool (one server's exports), instead of opening private ones.
   */
  pool?: SharedResources;
}

export interface OpenedRepository {
  repo: Repository;
  /** Undoes what opening created (a new OCI layout), after the operation writing into it failed. */
  abandon(): Promise<void>;
  close(): Promise<void>;
}

/** Opens the place a reference points at; `create` makes a missing OCI layout (or archive, when it is closed). */
export async function openRepository(ref: ImageReference, opts: RemoteOptions = {}, create = false): Promise<OpenedRepository> {
  // Layouts and archives load their code only when named: a registry open never needs it.
  if (ref.kind === 'oci') {
    const { OciLayout } = await import('./oci-layout.ts');
    const layout = await OciLayout.open(ref.path, { create });
    return { repo: layout, abandon: () => layout.removeIfCreated(), close: () => layout.close() };
  }
  if (ref.kind === 'oci-archive') {
    const { OciArchive } = await import('./oci-archive.ts');
    const archive = await OciArchive.open(ref.path, { create });
    return { repo: archive, abandon: async () => {}, close: () => archive.close() };
  }
  if (ref.kind === 'docker-archive') {
    if (create) throw new InvalidReferenceError(`${formatReference(ref)}: docker archives are read, not written (write oci-archive:FILE instead)`);
    const { DockerArchive } = await import('./docker-archive.ts');
    const archive = await DockerArchive.open(ref.path);
    return { repo: archive, abandon: async () => {}, close: () => archive.close() };
  }
  const credentials = opts.credentials ?? (await CredentialStore.load({ credsFile: opts.credsFile, dockerConfig: opts.dockerConfig }));
  const client = new RegistryClient(ref.host, { ...opts, credentials });
  return { repo: client.repository(ref.repository), abandon: async () => {}, close: () => client.close() };
}

export interface ResolvedImage {
  /** Digest of the image manifest (after index → platform). */
  digest: string;
  manifest: ImageManifest;
  raw: FetchedManifest;
  /** The index it came from, when the reference named one. */
  index: FetchedManifest | undefined;
}

/** Resolves a tag or digest to an image manifest, following an index to `platform`. */
export async function resolveImage(repo: Repository, target: string, platform: Platform = hostPlatform()): Promise<ResolvedImage> {
  let raw = await repo.getManifest(target);
  let index: FetchedManifest | undefined;
  if (isIndex(raw)) {
    index = raw;
    const d = selectPlatform(parseIndex(raw, repo.name), platform, `${repo.name}:${target}`);
    raw = await repo.getManifest(d.digest);
    if (isIndex(raw)) throw new InvalidReferenceError(`${repo.name}: nested index ${d.digest} is not supported`);
  }
  return { digest: raw.digest, manifest: parseManifest(raw, repo.name), raw, index };
}

export interface RemoteImage {
  reference: string;
  digest: string;
  manifest: ImageManifest;
  /** Outer layer blobs (tar/zfile/LSMT as stored), bottom → top. */
  layers: ByteSource[];
  /** The lazy sources among `layers` (registry layers), for prefetch and downloads. */
  lazy: LazySource[];
  /** The blob source behind each of `layers` (the shared one, when `layers` holds handles on it). */
  blobs: ByteSource[];
  repo: Repository;
  close(): Promise<void>;
}

/**
 * Opens a layer blob as a source: local file for layouts, lazy cached source for registries,
 * verified against the layer's tree when it has one (`direct`: the repository without the
 * proxy, for retries of bytes that failed).
 */
export async function openLayer(repo: Repository, desc: Descriptor, cache: BlobCache | undefined, opts: LazyOptions = {}, direct?: Repository): Promise<ByteSource> {
  return (await openLayerBlob(repo, desc, cache, opts, direct)).source;
}

/** openLayer, also saying whether the source is lazy (a registry's blob: what prefetch and downloads work on). */
/** The lazy source each opened registry layer blob is (a shared blob is opened once, by whichever export came first). */
const lazyOfBlob = new WeakMap<ByteSource, LazySource>();

async function openLayerBlob(
  repo: Repository,
  desc: Descriptor,
  cache: BlobCache | undefined,
  opts: LazyOptions,
  direct: Repository | undefined,
): Promise<{ source: ByteSource; lazy: LazySource | undefined }> {
  const raw = await repo.openBlob(desc.digest, desc.size);
  // Blobs of a layout or an archive are local files, read as they are.
  if (repo.kind !== 'registry') {
    try {
      if (opts.requireVerity) requireTree(desc, repo.name);
    } catch (e) {
      await raw.close();
      throw e;
    }
    return { source: raw, lazy: undefined };
  }
  const fetched = opts.meter ? new MeteredSource(raw, opts.meter) : raw;
  const entry = cache ? await cache.entry(desc.digest, desc.size) : undefined;
  const { blob, store } = await verifyLayer(repo, desc, fetched, entry, { requireVerity: opts.requireVerity, direct }).catch(async (e) => {
    await entry?.close();
    throw e;
  });
  const lazy = new LazySource(blob, { store, unit: opts.refill, maxInflight: opts.maxInflight });
  return { source: lazy, lazy };
}

/**
 * Opens `ref` (text or parsed) for lazy reading. The result owns everything it opened
 * (repository connection, cache if it opened one); close() releases it all.
 */
export async function openRemoteImage(ref: string | ImageReference, opts: RemoteOptions & LazyOptions = {}): Promise<RemoteImage> {
  const r = await resolveReference(ref);
  const pool = opts.pool;
  const leases: Lease<unknown>[] = [];
  const release = async () => {
    for (const l of leases.splice(0).reverse()) await l.release().catch(() => {});
  };
  /** A private value, or a lease on the pool's: either way released by close(). */
  const hold = async <T>(key: string, open: () => Promise<T>, close: (v: T) => Promise<void>): Promise<T> => {
    if (!pool) {
      const v = await open();
      leases.push({ value: v, release: () => close(v) });
      return v;
    }
    const lease = await pool.acquire(key, open, close);
    leases.push(lease);
    return lease.value;
  };
  const layers: ByteSource[] = [];
  const close = async () => {
    for (const l of layers) await l.close().catch(() => {});
    await release();
  };
  try {
    const repoKey = repositoryKey(r, opts);
    const opened = await hold(repoKey, () => openRepository(r, opts), (o) => o.close());
    const cacheKey = `cache:${opts.cacheDir ? path.resolve(opts.cacheDir) : ''}`;
    const openCache = () => BlobCache.open({ dir: opts.cacheDir!, capacity: opts.cacheSize, unit: opts.refill });
    const cache = opts.cache ?? (opts.cacheDir && r.kind === 'registry' ? await hold(cacheKey, openCache, (c) => c.close()) : undefined);
    // Bytes that fail verification are fetched again around the proxy, the likely liar.
    const directOpts = { ...opts, proxy: undefined };
    const directKey = repositoryKey(r, directOpts);
    const direct = r.kind === 'registry' && opts.proxy ? await hold(directKey, () => openRepository(r, directOpts), (o) => o.close()) : undefined;
    const img = await resolveImage(opened.repo, referenceTarget(r), opts.platform);
    // All layers at once: each open waits on its cache entry and tree, and every layer's
    // head and tail fetches should leave in one wave rather than one layer after another.
    const openOne = async (d: Descriptor): Promise<ByteSource> => {
      const open = async () => {
        const l = await openLayerBlob(opened.repo, d, cache, opts, direct?.repo);
        if (l.lazy) {
          lazyOfBlob.set(l.source, l.lazy);
          l.lazy.prefetchEnds();
        }
        return l.source;
      };
      if (!pool) return open();
      if (opts.requireVerity) requireTree(d, opened.repo.name);
      // The blob outlives this image while another export holds it: it keeps what it reads through.
      let deps: Lease<unknown>[] = [];
      const tree = layerVerity(d, opened.repo.name)?.tree;
      return pool.blob(
        `blob:${d.digest}${tree ? `+${tree}` : ''}`,
        async () => {
          deps = await Promise.all([
            pool.acquire(repoKey, () => openRepository(r, opts), (o) => o.close()),
            ...(cache && !opts.cache ? [pool.acquire(cacheKey, openCache, (c) => c.close())] : []),
            ...(direct ? [pool.acquire(directKey, () => openRepository(r, directOpts), (o) => o.close())] : []),
          ]);
          return open().catch(async (e: unknown) => {
            for (const dep of deps.splice(0)) await dep.release();
            throw e;
          });
        },
        async () => {
          for (const dep of deps) await dep.release();
        },
      );
    };
    const settled = await Promise.allSettled(img.manifest.layers.map(openOne));
    for (const s of settled) if (s.status === 'fulfilled') layers.push(s.value);
    const failed = settled.find((s) => s.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
    const blobs = layers.map((l) => sharedBlobOf(l)?.source ?? l);
    return {
      reference: formatReference(r),
      digest: img.digest,
      manifest: img.manifest,
      layers,
      lazy: blobs.map((b) => lazyOfBlob.get(b)).filter((l): l is LazySource => l !== undefined),
      blobs,
      repo: opened.repo,
      close,
    };
  } catch (e) {
    await close();
    throw e;
  }
}

/**
 * What makes two opened repositories interchangeable: the place, and every setting that
 * changes how it is reached or who we are to it (credentials by their source).
 */
export function repositoryKey(r: ImageReference, opts: RemoteOptions): string {
  return r.kind === 'registry' ? registryKey(r.host, r.repository, opts) : `${r.kind}:${path.resolve(r.path)}`;
}

/** repositoryKey() of a registry repository. */
export function registryKey(host: string, repository: string, o: RemoteOptions): string {
  const creds = o.credentials ? `object#${objectId(o.credentials)}` : `${o.credsFile ?? ''}|${o.dockerConfig ?? ''}`;
  return `registry:${host}/${repository}|${JSON.stringify([o.plainHttp, o.insecure, o.proxy, o.retries, o.retryBaseMs, o.idleTimeoutMs, o.connectTimeoutMs, o.headerTimeoutMs, o.minBytesPerSec, o.maxSockets, o.multiRange, creds])}`;
}

const objectIds = new WeakMap<object, number>();
let nextObjectId = 1;
function objectId(o: object): number {
  let id = objectIds.get(o);
  if (id === undefined) objectIds.set(o, (id = nextObjectId++));
  return id;
}

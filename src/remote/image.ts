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
import { OciArchive } from './oci-archive.ts';
import { OciLayout } from './oci-layout.ts';
import { resolveReference, referenceTarget, formatReference, type ImageReference } from './reference.ts';
import { RegistryBlobSource, RegistryClient, type RegistryOptions } from './registry.ts';
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
  if (ref.kind === 'oci') {
    const layout = await OciLayout.open(ref.path, { create });
    return { repo: layout, abandon: () => layout.removeIfCreated(), close: () => layout.close() };
  }
  if (ref.kind === 'oci-archive') {
    const archive = await OciArchive.open(ref.path, { create });
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
  const raw = await repo.openBlob(desc.digest, desc.size);
  if (!(raw instanceof RegistryBlobSource)) {
    if (opts.requireVerity) requireTree(desc, repo.name);
    return raw;
  }
  const fetched = opts.meter ? new MeteredSource(raw, opts.meter) : raw;
  const entry = cache ? await cache.entry(desc.digest, desc.size) : undefined;
  const { blob, store } = await verifyLayer(repo, desc, fetched, entry, { requireVerity: opts.requireVerity, direct }).catch(async (e) => {
    await entry?.close();
    throw e;
  });
  return new LazySource(blob, { store, unit: opts.refill, maxInflight: opts.maxInflight });
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
    for (const d of img.manifest.layers) {
      const open = async () => {
        const l = await openLayer(opened.repo, d, cache, opts, direct?.repo);
        if (l instanceof LazySource) l.prefetchEnds();
        return l;
      };
      if (!pool) {
        layers.push(await open());
        continue;
      }
      if (opts.requireVerity) requireTree(d, opened.repo.name);
      // The blob outlives this image while another export holds it: it keeps what it reads through.
      let deps: Lease<unknown>[] = [];
      const tree = layerVerity(d, opened.repo.name)?.tree;
      const key = `blob:${d.digest}${tree ? `+${tree}` : ''}`;
      layers.push(
        await pool.blob(
          key,
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
        ),
      );
    }
    const blobs = layers.map((l) => sharedBlobOf(l)?.source ?? l);
    return {
      reference: formatReference(r),
      digest: img.digest,
      manifest: img.manifest,
      layers,
      lazy: blobs.filter((l): l is LazySource => l instanceof LazySource),
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
  return `registry:${host}/${repository}|${JSON.stringify([o.plainHttp, o.insecure, o.proxy, o.retries, o.retryBaseMs, o.idleTimeoutMs, o.connectTimeoutMs, o.headerTimeoutMs, o.minBytesPerSec, o.maxSockets, creds])}`;
}

const objectIds = new WeakMap<object, number>();
let nextObjectId = 1;
function objectId(o: object): number {
  let id = objectIds.get(o);
  if (id === undefined) objectIds.set(o, (id = nextObjectId++));
  return id;
}

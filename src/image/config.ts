/**
 * The reference's per-device image config (config.v1.json, docs/format.md §4.1) → outer layer
 * sources bottom → top (local files, or lazy cached registry blobs under `repoBlobUrl`),
 * the writable upper's files, and the download / trace / result settings.
 */
import { access, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { NotFoundError } from '../io/errors.ts';
import { FileSource, wrapFsError } from '../io/file.ts';
import type { ByteSource } from '../io/types.ts';
import { CredentialStore } from '../remote/auth.ts';
import { BlobCache } from '../remote/cache.ts';
import { startBackgroundDownload, type BackgroundItem } from '../remote/download.ts';
import { InvalidReferenceError } from '../remote/errors.ts';
import type { LazyOptions, RemoteOptions } from '../remote/image.ts';
import { LazySource } from '../remote/lazy-source.ts';
import { VerityMissingError } from '../verity/errors.ts';
import { isDigest } from '../remote/reference.ts';
import { RegistryBlobSource, RegistryClient, type RegistryRepository } from '../remote/registry.ts';
import { registryKey } from '../remote/image.ts';
import { MeteredSource } from '../io/metrics.ts';
import { fileBlobKey, sharedBlobOf, type Lease } from '../io/shared.ts';

export interface LowerConfig {
  file?: string;
  dir?: string;
  digest?: string;
  size?: number;
  targetFile?: string;
  targetDigest?: string;
  gzipIndex?: string;
}

export interface DownloadConfig {
  enable?: boolean;
  /** Seconds before the first download (default 300). */
  delay?: number;
  /** Random extra seconds added to the delay (default 30). */
  delayExtra?: number;
  maxMBps?: number;
  tryCnt?: number;
  blockSize?: number;
}

export interface ImageConfigV1 {
  repoBlobUrl?: string;
  lowers: LowerConfig[];
  upper?: { index?: string; data?: string; target?: string; gzipIndex?: string };
  resultFile?: string;
  download?: DownloadConfig;
  accelerationLayer?: boolean;
  recordTracePath?: string;
}

export interface OpenedImageConfig {
  path: string;
  config: ImageConfigV1;
  /** Outer layer blobs, bottom → top (tar/zfile/LSMT still to be peeled). */
  layers: ByteSource[];
  /** The writable layer's files when both are given (else the image is read-only). */
  upper: { index: string; data: string } | undefined;
  resultFile: string | undefined;
  /** Trace to record or replay (recordTracePath, or the acceleration layer's `trace`). */
  tracePath: string | undefined;
  /** Writes "success" or "failed:<reason>" to resultFile, when one is configured. */
  reportResult(error?: unknown): Promise<void>;
  /** Starts the configured background download of remote lowers that have a `dir`. */
  startDownloads(overrides?: DownloadConfig): { done: Promise<void>; stop(): Promise<void> } | undefined;
  close(): Promise<void>;
}

/** Local blob names tried in a lower's dir, in the reference's order. */
const LOCAL_NAMES = ['overlaybd.commit', '.commit', 'overlaybd.sealed'];

/** When the blob sits where `obd pull` puts it next to the config, the pulled directory was moved. */
async function movedHint(configPath: string, digest: string): Promise<string> {
  const here = path.join(path.dirname(configPath), 'blobs', ...digest.split(':'));
  if (!(await exists(here))) return '';
  return ` (it is at ${here}: the pulled directory was moved, and config.v1.json records absolute paths; run obd pull again into the new place, which fetches nothing already there)`;
}

async function exists(p: string): Promise<boolean> {
  return access(p).then(
    () => true,
    () => false,
  );
}

/** Splits `https://host/v2/<repo>/blobs` into its registry parts. */
export function parseRepoBlobUrl(url: string): { plainHttp: boolean; host: string; repository: string } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new InvalidReferenceError(`repoBlobUrl "${url}" is not a URL`);
  }
  const m = /^\/v2\/(.+?)\/blobs\/?$/.exec(u.pathname);
  if (!m || (u.protocol !== 'http:' && u.protocol !== 'https:')) throw new InvalidReferenceError(`repoBlobUrl "${url}" is not of the form http(s)://<host>/v2/<repository>/blobs`);
  return { plainHttp: u.protocol === 'http:', host: u.host, repository: m[1]! };
}

/** Throws unless each named member of `obj` is absent or of the JSON type given. */
function checkTypes(obj: Record<string, unknown>, types: Record<string, 'string' | 'number' | 'boolean' | 'object'>, where: string): void {
  for (const [k, t] of Object.entries(types)) {
    const v = obj[k];
    if (v === undefined) continue;
    if (t === 'object' ? typeof v !== 'object' || v === null || Array.isArray(v) : typeof v !== t) throw new InvalidReferenceError(`${where}.${k} is ${JSON.stringify(v)?.slice(0, 80)}, expected a ${t}`);
    // Every string here names a file, a digest or a URL: none holds a NUL byte.
    if (typeof v === 'string' && v.includes('\0')) throw new InvalidReferenceError(`${where}.${k} holds a NUL byte`);
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

export function parseImageConfig(text: string, name: string): ImageConfigV1 {
  let doc: ImageConfigV1;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new InvalidReferenceError(`${name}: not JSON: ${(e as Error).message}`);
  }
  if (!isObject(doc) || !Array.isArray(doc.lowers)) throw new InvalidReferenceError(`${name}: no "lowers" array`);
  checkTypes(doc as unknown as Record<string, unknown>, { repoBlobUrl: 'string', upper: 'object', resultFile: 'string', download: 'object', accelerationLayer: 'boolean', recordTracePath: 'string' }, name);
  if (doc.upper) checkTypes(doc.upper as Record<string, unknown>, { index: 'string', data: 'string', target: 'string', gzipIndex: 'string' }, `${name}: upper`);
  if (doc.download) checkTypes(doc.download as Record<string, unknown>, { enable: 'boolean', delay: 'number', delayExtra: 'number', maxMBps: 'number', tryCnt: 'number', blockSize: 'number' }, `${name}: download`);
  doc.lowers.forEach((l, i) => {
    if (!isObject(l as unknown)) throw new InvalidReferenceError(`${name}: lowers[${i}] is not an object`);
    checkTypes(l as Record<string, unknown>, { file: 'string', dir: 'string', digest: 'string', size: 'number', targetFile: 'string', targetDigest: 'string', gzipIndex: 'string' }, `${name}: lowers[${i}]`);
    if (l.digest && !isDigest(l.digest)) throw new InvalidReferenceError(`${name}: lowers[${i}].digest "${l.digest}" is not sha256:<64 hex>`);
    if (l.size !== undefined && (!Number.isSafeInteger(l.size) || l.size < 0)) throw new InvalidReferenceError(`${name}: lowers[${i}].size ${l.size} is not a byte count`);
    if (l.targetFile || l.targetDigest) throw new InvalidReferenceError(`${name}: lowers[${i}] is a TurboOCI layer (targetFile/targetDigest), which is not supported`);
  });
  return doc;
}

/**
 * Opens config.v1.json. Relative paths are taken from the config file's directory. Remote
 * lowers need `repoBlobUrl`; they read lazily through `opts.cache`/`cacheDir` (or memory).
 */
export async function openImageConfig(file: string, opts: RemoteOptions & LazyOptions = {}): Promise<OpenedImageConfig> {
  const abs = path.resolve(file);
  return openParsedImageConfig(abs, parseImageConfig(await readFile(abs, 'utf8'), abs), opts);
}

/** As openImageConfig, for a config already parsed (`abs`: where it lives, for relative paths). */
export async function openParsedImageConfig(abs: string, config: ImageConfigV1, opts: RemoteOptions & LazyOptions = {}): Promise<OpenedImageConfig> {
  const base = path.dirname(abs);
  const at = (p: string) => path.resolve(base, p);
  const lowers = [...config.lowers];
  let tracePath = config.recordTracePath ? at(config.recordTracePath) : undefined;
  if (config.accelerationLayer && lowers.length > 0) {
    const acc = lowers.pop()!;
    if (acc.dir) tracePath = path.join(at(acc.dir), 'trace');
  }
  const layers: ByteSource[] = [];
  const remote: Array<{ lazy: LazySource; repo: RegistryRepository; digest: string; dir: string | undefined }> = [];
  let client: RegistryClient | undefined;
  let repo: RegistryRepository | undefined;
  const pool = opts.pool;
  const leases: Lease<unknown>[] = [];
  const hold = async <T>(p: Promise<Lease<T>>): Promise<T> => {
    const lease = await p;
    leases.push(lease);
    return lease.value;
  };
  let shareRepo: (() => Promise<Lease<unknown>>) | undefined;
  const cacheDir = !opts.cache && opts.cacheDir ? path.resolve(opts.cacheDir) : undefined;
  const openCache = () => BlobCache.open({ dir: cacheDir!, capacity: opts.cacheSize, unit: opts.refill });
  const shareCache = pool && cacheDir ? () => pool.acquire(`cache:${cacheDir}`, openCache, (c) => c.close()) : undefined;
  const ownCache = cacheDir && !pool ? await openCache() : undefined;
  const cache = opts.cache ?? ownCache ?? (shareCache ? await hold(shareCache()) : undefined);
  let downloads: { stop(): Promise<void> } | undefined;
  const close = async () => {
    await downloads?.stop();
    for (const l of layers) await l.close().catch(() => {});
    await ownCache?.close();
    await client?.close();
    for (const l of leases.splice(0).reverse()) await l.release().catch(() => {});
  };
  try {
    for (const [i, l] of lowers.entries()) {
      const candidates = [l.file ? at(l.file) : undefined, ...LOCAL_NAMES.map((n) => (l.dir ? path.join(at(l.dir), n) : undefined))].filter((p): p is string => !!p);
      let local: string | undefined;
      for (const c of candidates) {
        if (await exists(c)) {
          local = c;
          break;
        }
      }
      if (local) {
        const file = local;
        layers.push(pool ? await pool.blob(await fileBlobKey(file), () => FileSource.open(file)) : await FileSource.open(file));
        continue;
      }
      if (!l.digest) throw new InvalidReferenceError(`${abs}: lowers[${i}] has no local blob (${candidates.join(', ') || 'no file or dir'}) and no digest`);
      if (!config.repoBlobUrl) {
        const expected = candidates.length ? `expected its blob at ${candidates.join(' or ')}, which does not exist${await movedHint(abs, l.digest)}` : 'it names no file or dir';
        throw new NotFoundError(`${abs}: lowers[${i}] (${l.digest}): ${expected}; and the config has no repoBlobUrl to fetch it from`);
      }
      if (!repo) {
        const where = parseRepoBlobUrl(config.repoBlobUrl);
        const clientOpts = { ...opts, plainHttp: opts.plainHttp ?? where.plainHttp };
        const openClient = async () => {
          const credentials = opts.credentials ?? (await CredentialStore.load({ credsFile: opts.credsFile, dockerConfig: opts.dockerConfig }));
          const c = new RegistryClient(where.host, { ...clientOpts, credentials });
          return { client: c, repo: c.repository(where.repository) };
        };
        const key = registryKey(where.host, where.repository, clientOpts);
        const opened = pool ? await hold(pool.acquire(key, openClient, (o) => o.client.close())) : await openClient();
        if (!pool) client = opened.client;
        repo = opened.repo;
        shareRepo = pool ? () => pool.acquire(key, openClient, (o) => o.client.close()) : undefined;
      }
      if (opts.requireVerity) throw new VerityMissingError(`${abs}: lowers[${i}] (${l.digest}) is fetched lazily without a verity tree (--require-verity; a config names no trees)`);
      const size = l.size && l.size > 0 ? l.size : await repo.statBlob(l.digest);
      if (size === undefined) throw new InvalidReferenceError(`${abs}: lowers[${i}] blob ${l.digest} is not in ${repo.name}`);
      const digest = l.digest;
      const blobRepo = repo;
      const openLazy = async () => {
        const store = cache ? await cache.entry(digest, size) : undefined;
        const blob = new RegistryBlobSource(blobRepo, digest, size);
        const lazy = new LazySource(opts.meter ? new MeteredSource(blob, opts.meter) : blob, { store, unit: opts.refill, maxInflight: opts.maxInflight });
        lazy.prefetchEnds();
        return lazy;
      };
      let source: ByteSource;
      if (pool) {
        // The blob keeps its client and cache while any export holds it.
        let deps: Lease<unknown>[] = [];
        source = await pool.blob(
          `blob:${digest}`,
          async () => {
            deps = await Promise.all([shareRepo!(), ...(shareCache ? [shareCache()] : [])]);
            return openLazy().catch(async (e: unknown) => {
              for (const d of deps.splice(0)) await d.release();
              throw e;
            });
          },
          async () => {
            for (const d of deps) await d.release();
          },
        );
      } else source = await openLazy();
      layers.push(source);
      const lazy = (sharedBlobOf(source)?.source ?? source) as LazySource;
      remote.push({ lazy, repo, digest, dir: l.dir ? at(l.dir) : undefined });
    }
  } catch (e) {
    await close();
    throw e;
  }
  const upper = config.upper?.index && config.upper?.data ? { index: at(config.upper.index), data: at(config.upper.data) } : undefined;
  const resultFile = config.resultFile ? at(config.resultFile) : undefined;
  return {
    path: abs,
    config,
    layers,
    upper,
    resultFile,
    tracePath,
    async reportResult(error?: unknown) {
      if (!resultFile) return;
      const reason = error instanceof Error ? error.message : error === undefined ? '' : String(error);
      await writeFile(resultFile, error === undefined ? 'success' : `failed:${reason}`).catch((e) => {
        throw wrapFsError(resultFile, e);
      });
    },
    startDownloads(overrides?: DownloadConfig) {
      const d = { ...config.download, ...overrides };
      if (!d.enable) return undefined;
      const items: BackgroundItem[] = remote.filter((r) => r.dir).map((r) => ({ lazy: r.lazy, repo: r.repo, digest: r.digest, dest: path.join(r.dir!, 'overlaybd.commit') }));
      if (items.length === 0) return undefined;
      const delayMs = ((d.delay ?? 300) + Math.random() * (d.delayExtra ?? 30)) * 1000;
      const handle = startBackgroundDownload(items, { delayMs, maxBytesPerSec: (d.maxMBps ?? 100) * 2 ** 20, tries: d.tryCnt ?? 5 });
      downloads = handle;
      return handle;
    },
    close,
  };
}

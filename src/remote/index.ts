/**
 * The remote area's public part: image references, registries and OCI layouts as stores,
 * opening images lazily through a cache, pull / copy. Transport internals (HTTP, auth, chunk
 * stores) stay inside. What composes images out of these (push, config.v1.json, image
 * sources) lives in src/image/; the public `remote` namespace (src/remote-api.ts) adds it.
 */
export * from './errors.ts';
export { parseReference, resolveReference, formatReference, type ImageReference, type RegistryReference, type LayoutReference, type ArchiveReference, type DockerArchiveReference } from './reference.ts';
export type { Repository, RepositoryKind } from './store.ts';
export { RegistryClient, type RegistryOptions } from './registry.ts';
export { OciLayout } from './oci-layout.ts';
export { DockerArchive } from './docker-archive.ts';
export { LazySource, type LazySourceOptions } from './lazy-source.ts';
export { BlobCache, type BlobCacheOptions } from './cache.ts';
export { listCache, verifyCache, gcCache, type CacheListing, type CacheVerifyReport, type CacheGcOptions } from './cache-admin.ts';
export { openRemoteImage, openRepository, type RemoteOptions, type LazyOptions, type RemoteImage } from './image.ts';
export { downloadImage, copyImage, type PullOptions, type DownloadResult, type CopyResult } from './pull.ts';

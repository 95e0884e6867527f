/**
 * The remote area's public part: image references, registries and OCI layouts as stores,
 * opening images lazily through a cache, push / pull / copy, and the reference's
 * config.v1.json. Transport internals (HTTP, auth, chunk stores) stay inside.
 */
export * from './errors.ts';
export { parseReference, resolveReference, formatReference, type ImageReference, type RegistryReference, type LayoutReference, type ArchiveReference } from './reference.ts';
export type { Repository } from './store.ts';
export { RegistryClient, type RegistryOptions } from './registry.ts';
export { OciLayout } from './oci-layout.ts';
export { LazySource, type LazySourceOptions } from './lazy-source.ts';
export { BlobCache, type BlobCacheOptions } from './cache.ts';
export { openRemoteImage, openRepository, type RemoteOptions, type LazyOptions, type RemoteImage } from './image.ts';
export { openImageConfig, parseImageConfig, type ImageConfigV1, type DownloadConfig, type LowerConfig, type OpenedImageConfig } from './config.ts';
export { pushImage, type PushOptions, type PushResult } from './push.ts';
export { pullImage, copyImage, type PullOptions, type PullResult, type CopyResult } from './pull.ts';
export { openImageSources, type ImageSources } from './sources.ts';

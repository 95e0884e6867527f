/**
 * The public `remote` namespace: the remote area's public part (src/remote/index.ts:
 * references, stores, lazy images, pull / copy) with the image composition that works on
 * remote images, which lives in src/image/ (push, config.v1.json, image sources). One
 * namespace for users; two areas in the code, so that src/remote never imports src/image.
 */
export * from './remote/index.ts';
export { openImageConfig, parseImageConfig, type ImageConfigV1, type DownloadConfig, type LowerConfig, type OpenedImageConfig } from './image/config.ts';
export { pushImage, type PushOptions, type PushResult } from './image/push.ts';
export { pullImage, type PullResult } from './image/pull.ts';
export { openImageSources, type ImageSources } from './image/sources.ts';

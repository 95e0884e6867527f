/** Remote layers: references, registry and OCI-layout stores, lazy cached sources, push/pull. */
export * from './errors.ts';
export * from './reference.ts';
export * from './manifest.ts';
export * from './store.ts';
export * from './http.ts';
export * from './auth.ts';
export * from './registry.ts';
export * from './oci-layout.ts';
export * from './lazy-source.ts';
export * from './cache.ts';
export * from './download.ts';
export * from './trace.ts';
export * from './image.ts';
export * from './config.ts';
export * from './push.ts';
export * from './pull.ts';
export * from './sources.ts';

#!/usr/bin/env node
/**
 * `obd` launcher, in plain JavaScript so that starting it strips no TypeScript: Node's compile
 * cache keeps the compiled code and src/runtime/strip-cache.js the type-stripped sources.
 */
import module from 'node:module';
import { useStripCache } from '../runtime/strip-cache.js';

module.enableCompileCache?.();
const cacheDir = module.getCompileCacheDir?.();
if (cacheDir) useStripCache(cacheDir);
await import('./program.ts');

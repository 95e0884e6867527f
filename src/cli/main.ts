#!/usr/bin/env node
/**
 * `obd` entry point. Node's compile cache keeps the type-stripped, compiled modules between
 * runs (start-up 0.33 s → ~0.12 s), so it is enabled before the program is loaded.
 */
import module from 'node:module';

module.enableCompileCache?.();
await import('./program.ts');

#!/usr/bin/env node
/**
 * `obd` entry point for running the TypeScript source directly; the installed `obd` command
 * is src/cli/obd.js, which this only imports (see there for the start-up caches).
 */
// @ts-expect-error obd.js is plain JavaScript without declarations; it exports nothing.
await import('./obd.js');

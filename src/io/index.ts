export * from './types.ts';
export * from './errors.ts';
export * from './file.ts';
export * from './memory.ts';
export * from './util.ts';
export * from './sink.ts';
export * from './fd-io.ts';
export * from './lock.ts';

/** The io area's public part: the two interfaces, typed errors, and the sources, sinks and devices a library user builds on. */
export * from './types.ts';
export * from './errors.ts';
export { FileSource, isFile, type FileSourceOptions } from './file.ts';
export { MemoryDevice, MemorySink, MemorySource } from './memory.ts';
export { FileSink } from './sink.ts';
export { RawDevice } from './raw.ts';
export { ForwardingSource } from './forwarding.ts';
export { SliceSource, readAt, readExact, parseSize, formatSize } from './util.ts';
export { declareCapabilities } from './capabilities.ts';

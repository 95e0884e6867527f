/** The ZFile area: format, tar wrapper, reader and writer (docs/format.md §3). */
export * from './format.ts';
export * from './tar.ts';
export { isZFile, ZFileReader, type ZFileReaderOptions, type ZFileInfo, type VerifyOptions, type VerifyReport } from './reader.ts';
export {
  ZFileWriter,
  compressFile,
  compressStream,
  decompressFile,
  type ZFileWriterOptions,
  type ZFileWriteStats,
  type PatchableSink,
  type ConvertOptions,
  type DecompressStats,
} from './writer.ts';

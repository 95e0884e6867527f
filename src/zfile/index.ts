/** The ZFile area's public part: reading and writing zfiles, and the tar wrapper layer blobs ship in (docs/format.md §3). */
export type { Algorithm, ZFileHeader } from './format.ts';
export { ZFileChecksumError, ZFileFormatError, CompressionError } from './errors.ts';
export { openTarEntry } from './tar.ts';
export { isZFile, ZFileReader, type ZFileReaderOptions, type ZFileInfo, type VerifyOptions, type VerifyReport } from './reader.ts';
export {
  ZFileWriter,
  compressFile,
  compressStream,
  decompressFile,
  type ZFileWriterOptions,
  type ZFileWriteStats,
  type ConvertOptions,
  type DecompressStats,
} from './writer.ts';

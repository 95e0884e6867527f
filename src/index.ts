/**
 * overlaybd-ts: the public library API. Everything is a ByteSource (a blob) or a
 * BlockDevice (a virtual disk); see src/io/types.ts.
 */

// The two interfaces, local files, memory devices, typed errors, helpers.
export * from './io/index.ts';

// Opening whole images (layer files, config.v1.json, oci:DIR, registry refs) and exporting them.
export {
  openImage,
  openStack,
  openLayerFile,
  openLayerFiles,
  openLayerSource,
  type ImageOptions,
  type OpenedLayer,
  type Wrapping,
  type LayerSourceOptions,
} from './image/open.ts';
export { exportRaw, sha256Device, type ExportStats } from './image/export.ts';
export { describeLayer, type LayerInfo, type HeaderInfo } from './image/info.ts';

// LSMT layers.
export {
  SECTOR,
  MAX_ENTRY_SECTORS,
  NULL_UUID,
  parseHeaderTrailer,
  encodeHeaderTrailer,
  decodeEntry,
  encodeEntry,
  randomUuid,
  isUuid,
  type HeaderTrailer,
  type Mapping,
} from './lsmt/format.ts';
export { MappingTable } from './lsmt/table.ts';
export { openSealedLayer, type SealedLayer } from './lsmt/sealed.ts';
export { Stack, verifyChain, type StackOptions } from './lsmt/stack.ts';
export { mergeIndexes } from './lsmt/merged-index.ts';
export { IndexLookup } from './lsmt/lookup.ts';
export { SealedLayerWriter, writeSealedLayer, type LayerIdentity, type LayerWriteStats, type ExtentSpec } from './lsmt/writer.ts';
export { WritableLayer, type WritableCreateOptions, type WritableOpenOptions, type RecoveryReport, type WritableStats } from './lsmt/writable.ts';
export { commitLayer, commitWritable, type CommitOptions, type CommitStats } from './lsmt/commit.ts';
export { flattenStack, type FlattenOptions, type FlattenStats } from './lsmt/flatten.ts';
export { importRaw, type ImportOptions, type ImportStats } from './lsmt/import.ts';
export { LayerIoError } from './lsmt/io-errors.ts';

// ZFile compression (namespaced: its format constants share names with LSMT's).
export * as zfile from './zfile/index.ts';
export { ZFileReader, ZFileWriter, isZFile, openTarEntry } from './zfile/index.ts';

// Registries, OCI layouts, lazy remote sources, push/pull.
export * as remote from './remote/index.ts';
export { pushImage, pullImage, copyImage, openRemoteImage, openImageConfig, openImageSources, parseReference } from './remote/index.ts';

// The NBD server.
export * from './nbd/index.ts';

/**
 * overlaybd-ts: the public library API. Everything is a ByteSource (a blob) or a BlockDevice
 * (a virtual disk), composed one way from where bytes live to who reads them
 * (docs/design.md). What is not exported here is internal: reachable, for tools and tests,
 * through the explicit `overlaybd-ts/internal/<path>` subpath, with no promise of stability.
 */

/** The two interfaces, typed errors (one class per failure kind), local and in-memory sources, sinks and devices. */
export * from './io/index.ts';

/** The checked, emulating operations every export goes through (what an NBD, FUSE or ublk front end drives). */
export { DeviceOps, type OpKind, type WriteFlags, type ZeroFlags } from './ops/device-ops.ts';
export { capabilitiesOf } from './ops/capabilities.ts';

/** Opening whole images (layer files, config.v1.json, oci:DIR, oci-archive:FILE, registry references), exporting and describing them. */
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
export { LayerPool, defaultMemoryBudget, type LayerPoolOptions } from './image/layer-pool.ts';
export { exportRaw, sha256Device, type ExportStats } from './image/export.ts';
export { describeLayer, type LayerInfo, type HeaderInfo } from './image/info.ts';
export { openDisk, isNbdUri, type OpenedDisk, type DiskOptions } from './image/disk.ts';

/** LSMT layers: stacks of sealed layers, writable layers, and what makes layers (commit, merge, import, the sealed writer). */
export { SECTOR, NULL_UUID, randomUuid, isUuid, type HeaderTrailer } from './lsmt/format.ts';
export type { Layer } from './lsmt/layer.ts';
export type { MappingTable } from './lsmt/table.ts';
export { openSealedLayer, type SealedLayer } from './lsmt/sealed.ts';
export { Stack, verifyChain, type StackOptions } from './lsmt/stack.ts';
export { SealedLayerWriter, writeSealedLayer, type LayerIdentity, type LayerWriteStats, type ExtentSpec } from './lsmt/writer.ts';
export { WritableLayer, type WritableCreateOptions, type WritableOpenOptions, type RecoveryReport, type WritableStats } from './lsmt/writable.ts';
export { commitLayer, commitWritable, type CommitOptions, type CommitStats } from './lsmt/commit.ts';
export { flattenStack, type FlattenOptions, type FlattenStats } from './lsmt/flatten.ts';
export { importRaw, importDevice, type ImportOptions, type DeviceImportOptions, type ImportStats } from './lsmt/import.ts';
export { LayerIoError } from './lsmt/io-errors.ts';

/** qcow2 images and their backing chains, read-only, and importing them as layers. */
export * from './qcow2/index.ts';

/** ZFile compression: the reader, the writer and the tar wrapper (also as the `zfile` namespace). */
export * as zfile from './zfile/index.ts';
export { ZFileReader, ZFileWriter, isZFile, openTarEntry, compressFile, decompressFile } from './zfile/index.ts';

/** Registries and OCI layouts: references, lazy cached images, push / pull / copy (also as the `remote` namespace). */
export * as remote from './remote-api.ts';
export { pushImage, pullImage, copyImage, openRemoteImage, openImageConfig, openImageSources, parseReference } from './remote-api.ts';

/** Converting OCI and Docker images into overlaybd images (docs/convert.md). */
export { convertImage, DEFAULT_VSIZE, type ConvertOptions, type ConvertResult, type ConvertedLayer } from './convert/convert.ts';
export { DiffIdMismatchError, ImageConfigError, UnsupportedLayerError } from './convert/pipeline-errors.ts';

/** Verity trees: verified lazy reads, trees for existing images, image checks (also as the `verity` namespace). */
export * as verity from './verity/index.ts';
export { addVerity, checkImage, VerityError, VerityMissingError } from './verity/index.ts';

/** The NBD server, and a client that reads exports. */
export * from './nbd/index.ts';

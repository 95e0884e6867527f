/**
 * The seam between the pipeline (sources, layers, commit, cache, push) and the filesystem
 * step: applying one layer's uncompressed tar onto the disk of the layers below. The engine
 * in use is ext4-engine.ts (src/ext4 + src/tar + apply.ts); its `version` is part of every
 * cache key, so a change in what it writes never reuses a layer converted before it.
 */
import type { FsIdentity } from './identity.ts';

/** What a layer engine writes into: any block device (a writable LSMT layer here). */
export interface EngineDevice {
  readonly name: string;
  readonly size: number;
  read(buf: Uint8Array, offset: number): Promise<void>;
  write(buf: Uint8Array, offset: number): Promise<void>;
}

export interface EngineStats {
  /** Tar entries applied, and of them files, directories and whiteouts. */
  entries: number;
  files: number;
  dirs: number;
  whiteouts: number;
  /** File content bytes applied. */
  bytes: number;
  /** Bytes the filesystem wrote for this layer: file data and metadata. */
  dataBytes: number;
  metadataBytes: number;
}

export interface LayerEngine {
  /** Changes whenever the bytes the engine writes for the same input change. */
  readonly version: string;
  /**
   * Applies `tar` onto `dev` and writes everything out. `format` makes the filesystem first
   * (the bottom layer); otherwise the filesystem on `dev` (from the layers below) is opened.
   */
  apply(dev: EngineDevice, tar: AsyncIterable<Uint8Array>, opts: { format?: FsIdentity; name: string }): Promise<EngineStats>;
}

export async function defaultEngine(): Promise<LayerEngine> {
  return (await import('./ext4-engine.ts')).ext4Engine;
}

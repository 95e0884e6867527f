/**
 * The two interfaces everything composes through (see docs/design.md §1).
 *
 * A ByteSource is a blob: bytes with a size. A BlockDevice is a virtual disk that can also
 * describe what backs each range. Wrappers take one of these and are one themselves.
 */

/** A blob of bytes: a local file, a registry blob, a tar entry, a decompressing view. */
export interface ByteSource {
  /** Names the source in error messages (a path, URL, or `zfile(path)`). */
  readonly name: string;
  /** Size in bytes. */
  readonly size: number;
  /**
   * Reads up to `buf.length` bytes at `offset` into `buf` and resolves with the count read.
   * The count is short only at end of source; reading at or past the end resolves 0.
   */
  read(buf: Uint8Array, offset: number): Promise<number>;
  /**
   * Optional fast path: reads synchronously when that is cheap (the bytes are in memory or
   * the page cache) and returns what read() would resolve; returns undefined to ask the
   * caller to use read() instead. Lets hot paths skip a promise per piece.
   */
  tryReadSync?(buf: Uint8Array, offset: number): number | undefined;
  /**
   * Optional: tryReadSync into buf[at, at + length) without a view, for loops that read
   * thousands of pieces into one buffer (commit, merge).
   */
  tryReadSyncAt?(buf: Uint8Array, at: number, length: number, offset: number): number | undefined;
  /**
   * Optional: forgets cached copies of [offset, offset+length) so the next read fetches them
   * again — how a reader that found a bad checksum recovers from a corrupt cached download.
   */
  evict?(offset: number, length: number): Promise<void>;
  /**
   * Optional: checks the stored bytes against the source's own checksums (a zfile's block
   * CRCs, or decoding every block where it stores none), reporting what is bad rather than
   * throwing; resolves undefined when the source has nothing of its own to check.
   */
  checkIntegrity?(): Promise<IntegrityReport | undefined>;
  close(): Promise<void>;
}

/** What a source's own check found (ByteSource.checkIntegrity). */
export interface IntegrityReport {
  ok: boolean;
  /** What was checked and, when not ok, the first faults, for a report line. */
  detail: string;
}

/**
 * What backs a range of a device.
 * - `data`: stored bytes (may still happen to be zeros)
 * - `zero`: an explicit zeroed extent (trim/discard); reads zeros and hides lower layers
 * - `hole`: nothing in any layer; reads zeros
 */
export type ExtentKind = 'data' | 'zero' | 'hole';

export interface Extent {
  offset: number;
  length: number;
  kind: ExtentKind;
  /** Index of the layer (bottom = 0) that backs the range; -1 for holes. */
  layer: number;
}

/**
 * What a device can do, declared as data so exports (src/ops) decide once instead of probing
 * methods per request. Emulated operations are done by src/ops/device-ops.ts.
 */
export interface DeviceCapabilities {
  /** write() is present and the device accepts writes. */
  readonly writable: boolean;
  /** trim() is present: discarded ranges read as zeros afterwards. */
  readonly trim: boolean;
  /** How write-zeroes is done: by trimming (fast, leaves holes) or by writing zeros. */
  readonly zero: 'trim' | 'write' | 'none';
  /** How FUA is honoured: the device has no FUA of its own, so writes are followed by a flush. */
  readonly fua: 'flush' | 'none';
  /** flush() is present. */
  readonly flush: boolean;
  /** Reading a range warms what lies below (a cache, a lazy download): CACHE/prefetch is useful. */
  readonly prefetch: boolean;
  /** extents() describes real allocation (holes, zeroed ranges, layers). */
  readonly extents: boolean;
  /** Unit that discards are aligned to, and the smallest request worth making (bytes). */
  readonly minBlock: number;
  /** Requests of this size and alignment are served best (bytes). */
  readonly preferredBlock: number;
  /** Largest single request the device takes (bytes). */
  readonly maxRequest: number;
}

/** A virtual disk. Reads never return short: unbacked ranges read as zeros. */
export interface BlockDevice {
  readonly name: string;
  /** Virtual size in bytes. */
  readonly size: number;
  /** Number of layers below this device's top (1 for a single layer); feeds allocation depth. */
  readonly layerCount: number;
  readonly writable: boolean;
  /**
   * What the device can do. Optional for devices written elsewhere: src/ops derives it from
   * the methods present (capabilitiesOf) when it is missing.
   */
  readonly capabilities?: DeviceCapabilities;
  /** uuid of the device's top layer, when it has layers with identities (LSMT stacks and uppers). */
  readonly uuid?: string;
  /** Parent uuid recorded by the device's top layer. */
  readonly parentUuid?: string;
  /** Fills `buf` entirely with the bytes at `offset`. The range must lie inside `size`. */
  read(buf: Uint8Array, offset: number): Promise<void>;
  /** Describes [offset, offset+length) as consecutive extents covering the whole range. */
  extents(offset: number, length: number): Promise<Extent[]>;
  /** Present on writable devices. */
  write?(buf: Uint8Array, offset: number): Promise<void>;
  /** Discards the range: it reads as zeros afterwards and hides lower layers. */
  trim?(offset: number, length: number): Promise<void>;
  /** Makes every completed write durable. */
  flush?(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Sequential output: bytes are appended in order (a file being written, a compressing
 * writer, an upload). `position` counts the bytes accepted so far.
 */
export interface ByteSink {
  readonly name: string;
  readonly position: number;
  write(buf: Uint8Array): Promise<void>;
  /** Flushes buffered bytes and finishes the output (idempotent). */
  close(): Promise<void>;
}

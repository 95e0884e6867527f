/**
 * The ext4 engine's public types (docs/convert.md; the binding interface of issue 18).
 */

/** Where the filesystem lives: any src/io BlockDevice (e.g. a WritableLayer) fits. */
export interface Ext4Device {
  readonly name: string;
  readonly size: number;
  read(buf: Uint8Array, offset: number): Promise<void>;
  write(buf: Uint8Array, offset: number): Promise<void>;
}

export type FileType = 'file' | 'dir' | 'symlink' | 'chr' | 'blk' | 'fifo' | 'sock';

export interface Timespec {
  sec: number;
  nsec: number;
}

export interface Attrs {
  /** Permission bits only (07777); the type comes from the call. */
  mode: number;
  uid: number;
  gid: number;
  mtime: Timespec;
  /** Default mtime. */
  atime?: Timespec;
  /** Default mtime (crtime is set to ctime). */
  ctime?: Timespec;
  /**
   * Full names ("user.x", "security.capability", "trusted.x", "system.posix_acl_access" /
   * "_default" in the Linux VFS format — the engine converts ACLs to ext4's on-disk format).
   * Given: replaces all; undefined: unchanged.
   */
  xattrs?: ReadonlyMap<string, Uint8Array>;
}

export interface InodeInfo {
  ino: number;
  type: FileType;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  links: number;
  mtime: Timespec;
  rdev?: { major: number; minor: number };
}

export interface DirEntryInfo {
  name: Uint8Array;
  ino: number;
  type: FileType;
}

/**
 * Content of a regular file: pieces in increasing, non-overlapping offset order; gaps are holes.
 * Chunks are not reused by the producer (the engine may keep them until written).
 */
export type FileData = AsyncIterable<{ offset: number; bytes: Uint8Array }>;

export interface FormatOptions {
  /** 16 bytes. */
  uuid: Uint8Array;
  /** 16 bytes, default uuid. */
  hashSeed?: Uint8Array;
  /** ≤ 16 bytes. */
  label?: string;
  /** Bytes of filesystem per inode, default 16384. */
  inodeRatio?: number;
}

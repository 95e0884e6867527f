/**
 * What the tar reader yields (the convert pipeline's input): one entry per archive member,
 * with extended headers (PAX, GNU long names, sparse maps) already folded in.
 */
export type TarType = 'file' | 'hardlink' | 'symlink' | 'chr' | 'blk' | 'dir' | 'fifo';

export interface TarTime { sec: number; nsec: number }

export interface TarEntry {
  /** Normalized raw bytes: no leading "/" or "./", no trailing "/", no "." components, "//"
   *  collapsed; "" is the root itself; a ".." component is refused (TarPathError). */
  path: Uint8Array;
  type: TarType;
  mode: number;                 // 07777 bits
  uid: number; gid: number;
  mtime: TarTime;
  atime?: TarTime;
  ctime?: TarTime;
  size: number;                 // logical size (a sparse file's real size); 0 for non-files
  linkname: Uint8Array;         // hardlink: normalized like path; symlink: the raw target
  devmajor: number; devminor: number;
  xattrs: Map<string, Uint8Array>;   // SCHILY.xattr.* (and LIBARCHIVE.xattr.* base64)
  /** Data segments of a sparse file (offset, length) in file offsets; undefined = dense. */
  sparse?: { offset: number; length: number }[];
  /** The content as pieces at file offsets (one piece stream for a dense file, the sparse map's
   *  segments otherwise). Consume before asking for the next entry; unconsumed data is skipped. */
  data(): AsyncIterable<{ offset: number; bytes: Uint8Array }>;
}

export interface TarWarning {
  /** The archive's name, as given to the reader. */
  archive: string;
  /** Byte offset of the header the warning is about. */
  offset: number;
  message: string;
}

export interface ReadTarOptions {
  /** The archive's name in errors and warnings. */
  name?: string;
  /** Told about members that are skipped (a volume label) rather than refused. */
  onWarning?: (w: TarWarning) => void;
}

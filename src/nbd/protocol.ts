/**
 * NBD wire constants (all fields big-endian) from the NBD protocol document
 * (NetworkBlockDevice/nbd doc/proto.md), plus the mapping from typed errors to NBD errors.
 */
import { errnoOf, type Errno } from '../io/errors.ts';

export const NBDMAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
/** IHAVEOPT split in 32-bit halves, so option headers parse without BigInt. */
export const IHAVEOPT_HI = 0x49484156;
export const IHAVEOPT_LO = 0x454f5054;
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

// Handshake flags (server) and client flags.
export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;
export const FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_C_NO_ZEROES = 1 << 1;

// Transmission flags.
export const FLAG_HAS_FLAGS = 1 << 0;
export const FLAG_READ_ONLY = 1 << 1;
export const FLAG_SEND_FLUSH = 1 << 2;
export const FLAG_SEND_FUA = 1 << 3;
export const FLAG_ROTATIONAL = 1 << 4;
export const FLAG_SEND_TRIM = 1 << 5;
export const FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const FLAG_SEND_DF = 1 << 7;
export const FLAG_CAN_MULTI_CONN = 1 << 8;
export const FLAG_SEND_CACHE = 1 << 10;
export const FLAG_SEND_FAST_ZERO = 1 << 11;

// Options.
export const OPT_EXPORT_NAME = 1;
export const OPT_ABORT = 2;
export const OPT_LIST = 3;
export const OPT_STARTTLS = 5;
export const OPT_INFO = 6;
export const OPT_GO = 7;
export const OPT_STRUCTURED_REPLY = 8;
export const OPT_LIST_META_CONTEXT = 9;
export const OPT_SET_META_CONTEXT = 10;

// Option replies.
export const REP_ACK = 1;
export const REP_SERVER = 2;
export const REP_INFO = 3;
export const REP_META_CONTEXT = 4;
export const REP_ERR_UNSUP = 2 ** 31 + 1;
export const REP_ERR_POLICY = 2 ** 31 + 2;
export const REP_ERR_INVALID = 2 ** 31 + 3;
export const REP_ERR_TLS_REQD = 2 ** 31 + 5;
export const REP_ERR_UNKNOWN = 2 ** 31 + 6;
export const REP_ERR_SHUTDOWN = 2 ** 31 + 7;
export const REP_ERR_TOO_BIG = 2 ** 31 + 9;

// Info types for OPT_INFO / OPT_GO.
export const INFO_EXPORT = 0;
export const INFO_NAME = 1;
export const INFO_DESCRIPTION = 2;
export const INFO_BLOCK_SIZE = 3;

// Commands and command flags.
export const CMD_READ = 0;
export const CMD_WRITE = 1;
export const CMD_DISC = 2;
export const CMD_FLUSH = 3;
export const CMD_TRIM = 4;
export const CMD_CACHE = 5;
export const CMD_WRITE_ZEROES = 6;
export const CMD_BLOCK_STATUS = 7;

export const CMD_FLAG_FUA = 1 << 0;
export const CMD_FLAG_NO_HOLE = 1 << 1;
export const CMD_FLAG_DF = 1 << 2;
export const CMD_FLAG_REQ_ONE = 1 << 3;
export const CMD_FLAG_FAST_ZERO = 1 << 4;

// Structured reply flags and chunk types.
export const REPLY_FLAG_DONE = 1 << 0;
export const REPLY_TYPE_NONE = 0;
export const REPLY_TYPE_OFFSET_DATA = 1;
export const REPLY_TYPE_OFFSET_HOLE = 2;
export const REPLY_TYPE_BLOCK_STATUS = 5;
export const REPLY_TYPE_ERROR = 2 ** 15 + 1;

// base:allocation flags.
export const STATE_HOLE = 1 << 0;
export const STATE_ZERO = 1 << 1;

// NBD error numbers.
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

/** Metadata contexts this server offers, with the ids it assigns them. */
export const CTX_BASE_ALLOCATION = 'base:allocation';
export const CTX_ALLOCATION_DEPTH = 'qemu:allocation-depth';
export const CTX_ID_BASE = 1;
export const CTX_ID_DEPTH = 2;

/** Request header size, simple reply size, structured chunk header size. */
export const REQUEST_SIZE = 28;
export const SIMPLE_REPLY_SIZE = 16;
export const CHUNK_HEADER_SIZE = 20;

/**
 * The default maximum payload, advertised in NBD_INFO_BLOCK_SIZE: 64 MiB, as nbdkit, above
 * the 32 MiB every client may use, so clients that ignore the advertisement and send bigger
 * requests (nbd-tester-client's integrityhuge: 47.6 MiB) are served, as nbd-server serves them
 * (docs/nbd.md §4).
 */
export const MAX_PAYLOAD_DEFAULT = 64 * 1024 * 1024;
export const MIN_BLOCK = 512;
export const PREFERRED_BLOCK = 4096;

const ERRNO_TO_NBD: Record<Errno, number> = {
  EPERM: NBD_EPERM,
  EIO: NBD_EIO,
  EINVAL: NBD_EINVAL,
  ENOSPC: NBD_ENOSPC,
  ENOTSUP: NBD_ENOTSUP,
  ENOENT: NBD_EIO,
  EOVERFLOW: NBD_EOVERFLOW,
  ESHUTDOWN: NBD_ESHUTDOWN,
  EBUSY: NBD_EIO,
  ENOMEM: NBD_ENOMEM,
};

/** The NBD error for a failure: its errno (errnoOf: typed errors' own, system errors' by code). */
export function nbdErrorOf(e: unknown): number {
  return ERRNO_TO_NBD[errnoOf(e)] ?? NBD_EIO;
}

/** `nbd+unix:///NAME?socket=PATH` or `nbd://HOST:PORT/NAME` (RFC-style NBD URIs); `nbds…` with TLS. */
export function nbdUri(addr: { socket: string } | { host: string; port: number }, exportName = '', tls = false): string {
  const name = encodeURIComponent(exportName).replace(/%2F/g, '/');
  const scheme = tls ? 'nbds' : 'nbd';
  if ('socket' in addr) return `${scheme}+unix:///${name}?socket=${encodeURIComponent(addr.socket).replace(/%2F/g, '/')}`;
  const host = addr.host.includes(':') ? `[${addr.host}]` : addr.host;
  return `${scheme}://${host}:${addr.port}/${name}`;
}

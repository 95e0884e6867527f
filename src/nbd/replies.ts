/**
 * Encoders for what the server sends: option replies during the handshake, simple replies
 * and structured reply chunks during transmission. Cookies travel as two 32-bit halves so
 * the hot path never touches BigInt.
 */
import {
  CHUNK_HEADER_SIZE,
  OPTION_REPLY_MAGIC,
  REPLY_FLAG_DONE,
  REPLY_TYPE_ERROR,
  SIMPLE_REPLY_MAGIC,
  SIMPLE_REPLY_SIZE,
  STRUCTURED_REPLY_MAGIC,
} from './protocol.ts';

/** One option reply: magic, option, reply type, length, data. */
export function optionReply(option: number, type: number, data?: Uint8Array): Buffer {
  const n = data?.length ?? 0;
  const out = Buffer.allocUnsafe(20 + n);
  out.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
  out.writeUInt32BE(option, 8);
  out.writeUInt32BE(type, 12);
  out.writeUInt32BE(n, 16);
  if (data) out.set(data, 20);
  return out;
}

/** Writes a simple reply header at `at`. */
export function putSimpleReply(buf: Buffer, at: number, error: number, cookieHi: number, cookieLo: number): void {
  buf.writeUInt32BE(SIMPLE_REPLY_MAGIC, at);
  buf.writeUInt32BE(error, at + 4);
  buf.writeUInt32BE(cookieHi, at + 8);
  buf.writeUInt32BE(cookieLo, at + 12);
}

export function simpleReply(error: number, cookieHi: number, cookieLo: number): Buffer {
  const out = Buffer.allocUnsafe(SIMPLE_REPLY_SIZE);
  putSimpleReply(out, 0, error, cookieHi, cookieLo);
  return out;
}

/** Writes a structured chunk header at `at`; `length` is the payload size that follows. */
export function putChunkHeader(buf: Buffer, at: number, flags: number, type: number, cookieHi: number, cookieLo: number, length: number): void {
  buf.writeUInt32BE(STRUCTURED_REPLY_MAGIC, at);
  buf.writeUInt16BE(flags, at + 4);
  buf.writeUInt16BE(type, at + 6);
  buf.writeUInt32BE(cookieHi, at + 8);
  buf.writeUInt32BE(cookieLo, at + 12);
  buf.writeUInt32BE(length, at + 16);
}

/** Writes a 64-bit unsigned `value` (a safe integer) at `at`. */
export function putU64(buf: Buffer, at: number, value: number): void {
  buf.writeUInt32BE(Math.floor(value / 2 ** 32), at);
  buf.writeUInt32BE(value >>> 0, at + 4);
}

/** Longest error message sent, in UTF-16 units; keeps the UTF-8 form well under 4096 bytes. */
const MAX_MESSAGE = 1000;

/** A final NBD_REPLY_TYPE_ERROR chunk with a human-readable message. */
export function errorChunk(error: number, cookieHi: number, cookieLo: number, message: string): Buffer {
  const msg = Buffer.from(message.length > MAX_MESSAGE ? message.slice(0, MAX_MESSAGE - 1) + '…' : message, 'utf8');
  const out = Buffer.allocUnsafe(CHUNK_HEADER_SIZE + 6 + msg.length);
  putChunkHeader(out, 0, REPLY_FLAG_DONE, REPLY_TYPE_ERROR, cookieHi, cookieLo, 6 + msg.length);
  out.writeUInt32BE(error, CHUNK_HEADER_SIZE);
  out.writeUInt16BE(msg.length, CHUNK_HEADER_SIZE + 4);
  msg.copy(out, CHUNK_HEADER_SIZE + 6);
  return out;
}

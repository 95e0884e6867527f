/**
 * Entry paths and names are raw bytes (a tar may hold any byte but "/" and NUL in a name), so
 * they are split, compared and used as keys as bytes, never decoded as UTF-8.
 */

import { Buffer } from 'node:buffer';

/** A Map/Set key for a byte string: one char per byte (lossless, unlike UTF-8 decoding). */
export function byteKey(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('latin1');
}

/** The bytes a byteKey stands for. */
export function keyBytes(key: string): Uint8Array {
  return new Uint8Array(Buffer.from(key, 'latin1'));
}

/** The bytes of an ASCII literal. */
export function ascii(text: string): Uint8Array {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

/** The components of a normalized path ("" → none). */
export function splitPath(path: Uint8Array): Uint8Array[] {
  const parts: Uint8Array[] = [];
  let start = 0;
  for (let i = 0; i <= path.length; i++) {
    if (i === path.length || path[i] === 0x2f) {
      if (i > start) parts.push(path.subarray(start, i));
      start = i + 1;
    }
  }
  return parts;
}

export function startsWith(bytes: Uint8Array, prefix: Uint8Array): boolean {
  if (bytes.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (bytes[i] !== prefix[i]) return false;
  return true;
}

/** Byte order (shorter first on a common prefix), the order listings sort paths in. */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

/**
 * Printable form for messages and listings (the conformance suite's: test/helpers/fs-listing.py):
 * visible ASCII as is, except "%" and "\\" which, like every other byte, print as %XX.
 */
export function printable(bytes: Uint8Array): string {
  let out = '';
  for (const c of bytes) {
    out += c >= 0x21 && c <= 0x7e && c !== 0x25 && c !== 0x5c ? String.fromCharCode(c) : `%${c.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

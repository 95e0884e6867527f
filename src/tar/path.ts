/**
 * Member names as the convert pipeline wants them: components joined by single "/", no leading
 * "/" or "./", no "." components, no trailing "/", "" for the root. A ".." component could
 * reach outside the tree the layer is applied to, so it is refused (GNU tar and containerd
 * refuse such members too), as is a NUL byte (only possible in a PAX path).
 */
import { TarPathError } from './errors.ts';

const SLASH = 0x2f;
const DOT = 0x2e;

export function normalizePath(raw: Uint8Array, archive: string, offset: number, what = 'path'): Uint8Array {
  const out = new Uint8Array(raw.length);
  let n = 0;
  let i = 0;
  while (i < raw.length) {
    while (i < raw.length && raw[i] === SLASH) i++;
    const start = i;
    while (i < raw.length && raw[i] !== SLASH) {
      if (raw[i] === 0) throw new TarPathError(archive, offset, `${what} ${show(raw)} holds a NUL byte`);
      i++;
    }
    const len = i - start;
    if (len === 0 || (len === 1 && raw[start] === DOT)) continue;
    if (len === 2 && raw[start] === DOT && raw[start + 1] === DOT) {
      throw new TarPathError(archive, offset, `${what} ${show(raw)} has a ".." component`);
    }
    if (n > 0) out[n++] = SLASH;
    out.set(raw.subarray(start, i), n);
    n += len;
  }
  return n === raw.length ? out : out.slice(0, n);
}

/** A name for messages: JSON-quoted, with bytes that are not UTF-8 shown as U+FFFD. */
export function show(name: Uint8Array): string {
  return JSON.stringify(Buffer.from(name.buffer, name.byteOffset, name.length).toString('utf8'));
}

/**
 * The converted image's config is the source's, byte for byte, with only `rootfs.diff_ids`
 * replaced: keys keep their order, numbers and escapes their spelling, unknown fields stay.
 * Re-serialising the parsed JSON would not promise that (integer-like keys move, `\u003c`
 * becomes `<`), so the new array is spliced into the original text at the value's place.
 */
import { ImageConfigError } from './pipeline-errors.ts';
import { isDigest } from '../remote/reference.ts';

/** The config's rootfs.diff_ids, checked: one well-formed digest per layer. */
export function configDiffIds(config: Uint8Array, layers: number, where: string): string[] {
  const doc = parseConfig(config, where);
  const ids = (doc.rootfs as Record<string, unknown> | undefined)?.diff_ids;
  if (!Array.isArray(ids)) throw new ImageConfigError(where, 'has no rootfs.diff_ids list');
  if (ids.length !== layers) throw new ImageConfigError(where, `lists ${ids.length} diff_ids for the manifest's ${layers} layers`);
  ids.forEach((d, i) => {
    if (!isDigest(d) || !(d as string).startsWith('sha256:')) throw new ImageConfigError(where, `rootfs.diff_ids[${i}] is ${JSON.stringify(d)}, not a sha256 digest`);
  });
  return ids as string[];
}

function parseConfig(config: Uint8Array, where: string): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(config).toString('utf8'));
  } catch (e) {
    throw new ImageConfigError(where, `is not JSON: ${(e as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new ImageConfigError(where, 'is not a JSON object');
  return doc as Record<string, unknown>;
}

/** `config` with rootfs.diff_ids replaced by `diffIds` and every other byte kept. */
export function replaceDiffIds(config: Uint8Array, diffIds: readonly string[], where: string): Uint8Array {
  parseConfig(config, where);
  const text = Buffer.from(config).toString('utf8');
  const rootfs = lastMember(text, skipWs(text, 0), 'rootfs');
  if (!rootfs || text[rootfs.start] !== '{') throw new ImageConfigError(where, 'has no rootfs object');
  const ids = lastMember(text, rootfs.start, 'diff_ids');
  if (!ids) throw new ImageConfigError(where, 'has no rootfs.diff_ids');
  return Buffer.from(text.slice(0, ids.start) + JSON.stringify(diffIds) + text.slice(ids.end));
}

interface Span {
  start: number;
  end: number;
}

/** The value span of the last member `key` of the object starting at `at` (JSON.parse keeps the last). */
function lastMember(s: string, at: number, key: string): Span | undefined {
  let found: Span | undefined;
  let i = skipWs(s, at + 1);
  while (s[i] !== '}') {
    const keyEnd = stringEnd(s, i);
    const name = JSON.parse(s.slice(i, keyEnd)) as string;
    const start = skipWs(s, skipWs(s, keyEnd) + 1);
    const end = valueEnd(s, start);
    if (name === key) found = { start, end };
    i = skipWs(s, end);
    if (s[i] === ',') i = skipWs(s, i + 1);
  }
  return found;
}

function skipWs(s: string, i: number): number {
  while (s[i] === ' ' || s[i] === '\n' || s[i] === '\r' || s[i] === '\t') i++;
  return i;
}

/** End of the string literal starting at `i` (just past its closing quote). */
function stringEnd(s: string, i: number): number {
  for (let j = i + 1; ; j++) {
    if (s[j] === '\\') j++;
    else if (s[j] === '"') return j + 1;
  }
}

/** End of the (valid) JSON value starting at `i`. */
function valueEnd(s: string, i: number): number {
  const c = s[i];
  if (c === '"') return stringEnd(s, i);
  if (c === '{' || c === '[') {
    const close = c === '{' ? '}' : ']';
    let j = skipWs(s, i + 1);
    while (s[j] !== close) {
      if (c === '{') j = skipWs(s, skipWs(s, stringEnd(s, j)) + 1);
      j = skipWs(s, valueEnd(s, j));
      if (s[j] === ',') j = skipWs(s, j + 1);
    }
    return j + 1;
  }
  let j = i;
  while (j < s.length && !',}] \t\n\r'.includes(s[j]!)) j++;
  return j;
}

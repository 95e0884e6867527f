/**
 * The data recipes of test/fixtures/MANIFEST.md, so plain inputs are regenerated instead of
 * stored: R(label, n), TEXT(start, n), FILL(b, n), and the zfile inputs built from them.
 */
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures');
export const K = 1024;
export const M = 1048576;

/** Concatenation of SHA256(utf8(label) || uint64_le(k)) for k = 0, 1, …; first n bytes. */
export function R(label: string, n: number): Buffer {
  const out = Buffer.alloc(n);
  const lab = Buffer.from(label, 'utf8');
  const ctr = Buffer.alloc(8);
  for (let k = 0, off = 0; off < n; k++, off += 32) {
    ctr.writeBigUInt64LE(BigInt(k));
    const h = createHash('sha256').update(lab).update(ctr).digest();
    h.copy(out, off, 0, Math.min(32, n - off));
  }
  return out;
}

/** ASCII lines "OverlayBD reference line %06d: …\n" (78 bytes each) from `start`; first n bytes. */
export function TEXT(start: number, n: number): Buffer {
  const out = Buffer.alloc(n);
  for (let i = start, off = 0; off < n; i++) {
    const line = `OverlayBD reference line ${String(i).padStart(6, '0')}: the quick brown fox jumps over the lazy dog.\n`;
    off += out.write(line, off, 'latin1');
  }
  return out;
}

export function FILL(b: number, n: number): Buffer {
  return Buffer.alloc(n, b);
}

/** Evaluates a recipe expression as written in ops.json, e.g. "R('L1-w2', 1048576)". */
export function recipe(expr: string): Buffer {
  const m = /^(R|TEXT|FILL)\((.*)\)$/.exec(expr.trim());
  if (!m) throw new Error(`bad recipe ${expr}`);
  const args = m[2]!.split(',').map((a) => a.trim());
  if (m[1] === 'R') return R(args[0]!.replace(/^'|'$/g, ''), Number(args[1]));
  if (m[1] === 'TEXT') return TEXT(Number(args[0]), Number(args[1]));
  return FILL(Number(args[0]), Number(args[1]));
}

let zin8: Buffer | undefined;
/** zinput-8m.bin (sha256 26d36746…). */
export function zinput8m(): Buffer {
  if (zin8) return zin8;
  const out = Buffer.alloc(8 * M);
  TEXT(0, 3 * M).copy(out, 1 * M);
  R('zin-rand', 512 * K).copy(out, 4 * M);
  const mix = R('zin-mix', 192 * 4096);
  let mixOff = 0;
  for (let j = 0; j < 768; j++) {
    const at = 5 * M + j * 4096;
    switch (j % 4) {
      case 0:
        mix.copy(out, at, mixOff, mixOff + 4096);
        mixOff += 4096;
        break;
      case 1:
        break;
      case 2:
        TEXT(j * 100, 4096).copy(out, at);
        break;
      case 3:
        out.fill(j & 0xff, at, at + 4096);
        break;
    }
  }
  zin8 = out;
  return out;
}

/** zinput-odd.bin = zinput-8m.bin[3.5M : 3.5M + 1234567]. */
export function zinputOdd(): Buffer {
  const start = 3.5 * M;
  return zinput8m().subarray(start, start + 1234567);
}

export function sha256(buf: Uint8Array): string {
  return createHash('sha256').update(buf).digest('hex');
}

/** Expected digests from the fixture manifest. */
export const DIGESTS = {
  zinput8m: '26d367464fe4f82b40bc9202d59861a614386bc34a76776be1a850325a07a2f1',
  zinputOdd: 'dd4c1fe5ba5f393430165ff03b701ef0a98ed451c38d92bade2836904b911c64',
  layer1: '8c0be290a5b735109709f426020ee869fb566f41ca7c22014042161b4136ff41',
  layer12: 'c1774986dbbbbad9617b3a65a0988cd07b8b39fc7f81f4ffa5bc49efe49d1e97',
  layer123: '2e934e7aadac27b164b562713673cdd0fd295e063f4edc6cf6fde77a54dcc967',
  layer2alone: '4dfcea6a5417d1f7a360f8a8750f82f62881637aca6c820d8f168bcc01b0eb57',
  layer3alone: '533fc15a73639bf3d569cccad44094f9969f21d8a5633551662fbbb18a7273a2',
} as const;

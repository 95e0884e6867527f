/**
 * ext4's directory-index (htree) name hashes: legacy, half_md4 and tea, each reading the name's
 * bytes as signed or unsigned chars (the superblock's EXT2_FLAGS_SIGNED_HASH /
 * EXT2_FLAGS_UNSIGNED_HASH records which the creating host used). The algorithms are the public
 * ones of the kernel's fs/ext4/hash.c and e2fsprogs' lib/ext2fs/dirhash.c; the result follows
 * the kernel, which is the reader that must find names: the 32-bit major hash with its low bit
 * cleared (that bit marks hash-collision continuation in index entries), and 0xfffffffe (the
 * kernel's end-of-directory cookie) moved to 0xfffffffc.
 *
 * Hot path (every add and lookup hashes once): no allocation, module-level scratch words.
 */

export type HashVersion = 'legacy' | 'half_md4' | 'tea';

/** The on-disk code of each version (dx_root_info.hash_version, s_def_hash_version). */
export const HASH_CODE: Readonly<Record<HashVersion, number>> = { legacy: 0, half_md4: 1, tea: 2 };

const DEFAULT_SEED = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476] as const;
const buf = new Uint32Array(4);
const words = new Uint32Array(8);
const result = { major: 0, minor: 0 };

/**
 * ext4's directory hash of `name`; `major` has its low bit cleared as ext4 stores it. An
 * all-zero or missing seed means the default MD4 constants. The returned object is fresh.
 */
export function dirHash(name: Uint8Array, version: HashVersion, seed: Uint32Array | undefined,
                        unsigned: boolean): { major: number; minor: number } {
  dirHashInto(name, version, seed, unsigned, result);
  return { major: result.major, minor: result.minor };
}

/** `dirHash` writing into `out` (no allocation; for the directory code's hot paths). */
export function dirHashInto(name: Uint8Array, version: HashVersion, seed: Uint32Array | undefined,
                            unsigned: boolean, out: { major: number; minor: number }): void {
  let major: number;
  let minor = 0;
  if (version === 'legacy') {
    major = legacyHash(name, unsigned);
  } else {
    loadSeed(seed);
    const half = version === 'half_md4';
    const chunk = half ? 32 : 16;
    for (let p = 0; p < name.length; p += chunk) {
      hashWords(name, p, name.length - p, half ? 8 : 4, unsigned);
      if (half) halfMd4(); else tea();
    }
    major = half ? buf[1] : buf[0];
    minor = half ? buf[2] : buf[1];
  }
  major = (major & ~1) >>> 0;
  if (major === 0xfffffffe) major = 0xfffffffc;
  out.major = major;
  out.minor = minor;
}

function loadSeed(seed: Uint32Array | undefined): void {
  const given = seed !== undefined && (seed[0] | seed[1] | seed[2] | seed[3]) !== 0;
  for (let i = 0; i < 4; i++) buf[i] = given ? seed[i] : DEFAULT_SEED[i];
}

function charAt(name: Uint8Array, i: number, unsigned: boolean): number {
  const c = name[i];
  return unsigned || c < 0x80 ? c : c - 256;
}

/** The "dx_hack_hash" of ext3's first htree; its minor hash is always 0. */
function legacyHash(name: Uint8Array, unsigned: boolean): number {
  let h0 = 0x12a3fe2d;
  let h1 = 0x37abe8f9;
  for (let i = 0; i < name.length; i++) {
    let h = (h1 + (h0 ^ Math.imul(charAt(name, i, unsigned), 7152373))) >>> 0;
    if (h & 0x80000000) h = (h - 0x7fffffff) >>> 0;
    h1 = h0;
    h0 = h;
  }
  return (h0 << 1) >>> 0;
}

/**
 * Packs up to `num` words of the name from `start` (big-endian within each word, as the
 * reference's str2hashbuf does), padding with a pattern made of the *remaining* length.
 */
function hashWords(name: Uint8Array, start: number, remaining: number, num: number, unsigned: boolean): void {
  let pad = (remaining | (remaining << 8)) >>> 0;
  pad = (pad | (pad << 16)) >>> 0;
  const len = Math.min(remaining, num * 4);
  let val = pad;
  let w = 0;
  for (let i = 0; i < len; i++) {
    val = (charAt(name, start + i, unsigned) + (val << 8)) >>> 0;
    if ((i & 3) === 3) {
      words[w++] = val;
      val = pad;
    }
  }
  if (w < num) words[w++] = val;
  while (w < num) words[w++] = pad;
}

const DELTA = 0x9e3779b9;

/** TEA in a Davies–Meyer construction over 4 words; keeps buf[0..1]. */
function tea(): void {
  let sum = 0;
  let b0 = buf[0];
  let b1 = buf[1];
  const a = words[0], b = words[1], c = words[2], d = words[3];
  for (let n = 0; n < 16; n++) {
    sum = (sum + DELTA) >>> 0;
    b0 = (b0 + ((((b1 << 4) + a) ^ (b1 + sum) ^ ((b1 >>> 5) + b)) >>> 0)) >>> 0;
    b1 = (b1 + ((((b0 << 4) + c) ^ (b0 + sum) ^ ((b0 >>> 5) + d)) >>> 0)) >>> 0;
  }
  buf[0] += b0;
  buf[1] += b1;
}

const K2 = 0x5a827999;
const K3 = 0x6ed9eba1;

function rotl(x: number, s: number): number {
  return ((x << s) | (x >>> (32 - s))) >>> 0;
}

/** The cut-down MD4 transform (three rounds of eight steps) over 8 words. */
function halfMd4(): void {
  let a = buf[0], b = buf[1], c = buf[2], d = buf[3];
  const x = words;
  const F = (p: number, q: number, r: number): number => r ^ (p & (q ^ r));
  const G = (p: number, q: number, r: number): number => ((p & q) + ((p ^ q) & r)) >>> 0;
  const H = (p: number, q: number, r: number): number => p ^ q ^ r;

  a = rotl(a + F(b, c, d) + x[0], 3);
  d = rotl(d + F(a, b, c) + x[1], 7);
  c = rotl(c + F(d, a, b) + x[2], 11);
  b = rotl(b + F(c, d, a) + x[3], 19);
  a = rotl(a + F(b, c, d) + x[4], 3);
  d = rotl(d + F(a, b, c) + x[5], 7);
  c = rotl(c + F(d, a, b) + x[6], 11);
  b = rotl(b + F(c, d, a) + x[7], 19);

  a = rotl(a + G(b, c, d) + x[1] + K2, 3);
  d = rotl(d + G(a, b, c) + x[3] + K2, 5);
  c = rotl(c + G(d, a, b) + x[5] + K2, 9);
  b = rotl(b + G(c, d, a) + x[7] + K2, 13);
  a = rotl(a + G(b, c, d) + x[0] + K2, 3);
  d = rotl(d + G(a, b, c) + x[2] + K2, 5);
  c = rotl(c + G(d, a, b) + x[4] + K2, 9);
  b = rotl(b + G(c, d, a) + x[6] + K2, 13);

  a = rotl(a + H(b, c, d) + x[3] + K3, 3);
  d = rotl(d + H(a, b, c) + x[7] + K3, 9);
  c = rotl(c + H(d, a, b) + x[2] + K3, 11);
  b = rotl(b + H(c, d, a) + x[6] + K3, 15);
  a = rotl(a + H(b, c, d) + x[1] + K3, 3);
  d = rotl(d + H(a, b, c) + x[5] + K3, 9);
  c = rotl(c + H(d, a, b) + x[0] + K3, 11);
  b = rotl(b + H(c, d, a) + x[4] + K3, 15);

  buf[0] += a;
  buf[1] += b;
  buf[2] += c;
  buf[3] += d;
}

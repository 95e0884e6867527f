/**
 * Byte-level mutations of a valid seed: bit flips, byte sets, truncation, extension,
 * splices from another seed, and interesting integers written over known fields. Each
 * mutation is described in words so a report says what was done to the seed.
 */
import type { Rng } from './rng.ts';

/** An integer field of a format: where it is, how wide, and its byte order. */
export interface Field {
  at: number;
  width: 1 | 2 | 4 | 8;
  /** Big-endian (NBD); little-endian otherwise. */
  be?: boolean;
  /** Names the field in reports. */
  name?: string;
}

export interface Mutated {
  bytes: Uint8Array;
  ops: string[];
}

/** Values at the edges of what formats and arithmetic hold. */
const INTERESTING: readonly bigint[] = [
  0n, 1n, 2n, 7n, 8n, 0x7fn, 0x80n, 0xffn, 0x100n, 511n, 512n, 513n, 4095n, 4096n, 4097n, 0x7fffn, 0x8000n, 0xffffn, 0x10000n,
  2n ** 31n - 1n, 2n ** 31n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 32n + 512n, 2n ** 40n, 2n ** 50n - 1n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 53n + 1n,
  2n ** 55n - 1n, 2n ** 62n, 2n ** 63n - 1n, 2n ** 63n, 2n ** 64n - 512n, 2n ** 64n - 1n,
];

function readField(b: Uint8Array, f: Field): bigint {
  let v = 0n;
  for (let i = 0; i < f.width; i++) v |= BigInt(b[f.at + (f.be ? f.width - 1 - i : i)]!) << BigInt(8 * i);
  return v;
}

function writeField(b: Uint8Array, f: Field, v: bigint): void {
  const mask = (1n << BigInt(8 * f.width)) - 1n;
  let x = ((v % (mask + 1n)) + mask + 1n) & mask;
  for (let i = 0; i < f.width; i++) {
    b[f.at + (f.be ? f.width - 1 - i : i)] = Number(x & 0xffn);
    x >>= 8n;
  }
}

/** A position to change: near a known field half of the time, anywhere otherwise. */
function position(rng: Rng, len: number, fields: readonly Field[]): number {
  if (fields.length && rng.chance(0.5)) {
    const f = rng.pick(fields);
    return Math.min(len - 1, f.at + rng.int(f.width + 8));
  }
  return rng.int(len);
}

function grow(b: Uint8Array, extra: Uint8Array): Uint8Array {
  const out = new Uint8Array(b.length + extra.length);
  out.set(b);
  out.set(extra, b.length);
  return out;
}

type Op = (b: Uint8Array, rng: Rng, fields: readonly Field[], donors: readonly Uint8Array[]) => [Uint8Array, string];

const OPS: readonly [weight: number, op: Op][] = [
  [3, (b, rng, fields) => {
    const at = position(rng, b.length, fields);
    const bit = rng.int(8);
    b[at]! ^= 1 << bit;
    return [b, `flip bit ${bit} @${at}`];
  }],
  [2, (b, rng, fields) => {
    const at = position(rng, b.length, fields);
    const v = rng.pick([0, 0xff, 0x7f, 0x80, rng.int(256)]);
    b[at] = v;
    return [b, `set byte @${at} = 0x${v.toString(16)}`];
  }],
  [2, (b, rng, fields) => {
    const at = position(rng, b.length, fields);
    const n = Math.min(b.length - at, 1 + rng.int(rng.pick([16, 16, 16, 16, 4096, 4096, 262144])));
    const v = rng.chance(0.5) ? 0 : rng.int(256);
    b.fill(v, at, at + n);
    return [b, `fill [${at}, +${n}) with 0x${v.toString(16)}`];
  }],
  [4, (b, rng, fields) => {
    if (!fields.length) return [b, 'no fields'];
    const f = rng.pick(fields);
    if (f.at + f.width > b.length) return [b, `field @${f.at} cut off`];
    const old = readField(b, f);
    const v = rng.chance(0.7) ? rng.pick(INTERESTING) : rng.pick([old + 1n, old - 1n, old * 2n, old + 512n, old - 512n, old + 4096n, old ^ (1n << BigInt(rng.int(8 * f.width)))]);
    writeField(b, f, v);
    return [b, `${f.name ?? 'field'}@${f.at}/${f.width}${f.be ? 'be' : 'le'} ${old} → ${v}`];
  }],
  [1, (b, rng, fields) => {
    const cut = rng.chance(0.5) && fields.length ? Math.min(b.length - 1, rng.pick(fields).at) : rng.int(b.length);
    return [new Uint8Array(b.subarray(0, cut)), `truncate to ${cut}`];
  }],
  [1, (b, rng) => {
    const n = rng.pick([1, 511, 512, 4096, 1 + rng.int(65536)]);
    return [grow(b, rng.chance(0.5) ? new Uint8Array(n) : rng.bytes(n)), `extend by ${n}`];
  }],
  [1, (b, rng, _fields, donors) => {
    const d = rng.pick(donors);
    if (!d.length) return [b, 'empty donor'];
    const from = rng.int(d.length);
    const n = Math.min(d.length - from, 1 + rng.int(rng.chance(0.5) ? 64 : 8192));
    const to = rng.chance(0.5) ? Math.min(from, b.length - 1) : rng.int(b.length);
    const m = Math.min(n, b.length - to);
    b.set(d.subarray(from, from + m), to);
    return [b, `splice donor [${from}, +${m}) → @${to}`];
  }],
  [1, (b, rng) => {
    const from = rng.int(b.length);
    const n = Math.min(b.length - from, 1 + rng.int(4096));
    const to = rng.int(b.length);
    b.copyWithin(to, from, from + n);
    return [b, `copy [${from}, +${n}) → @${to}`];
  }],
];
const TOTAL = OPS.reduce((s, [w]) => s + w, 0);

/** Applies one to three mutations to a copy of `seed`. `donors` feed splices. */
export function mutateBytes(seed: Uint8Array, fields: readonly Field[], rng: Rng, donors: readonly Uint8Array[] = [seed]): Mutated {
  // A copy: Buffer#slice would be a view, and mutations would reach the seed.
  let b: Uint8Array = new Uint8Array(seed);
  const ops: string[] = [];
  const n = 1 + (rng.chance(0.3) ? rng.int(3) : 0);
  for (let i = 0; i < n; i++) {
    if (b.length === 0) {
      ops.push('empty');
      break;
    }
    let w = rng.int(TOTAL);
    let k = 0;
    while (w >= OPS[k]![0]) w -= OPS[k++]![0];
    const [next, what] = OPS[k]![1](b, rng, fields, donors);
    b = next;
    ops.push(what);
  }
  return { bytes: b, ops };
}

/**
 * The deterministic operation stream of the crash test, shared by the writing child and the
 * checking parent. Every operation makes exactly one index entry (writes ≤ 4 MiB after
 * sector completion, sector-aligned trims ≤ 16383 sectors), so the number of entries that
 * survive a crash is the number of operations that survived.
 */
export const CRASH_VSIZE = 4 << 20;

export type CrashOp = { kind: 'write'; offset: number; data: Uint8Array } | { kind: 'trim'; offset: number; length: number };

function mix(a: number): number {
  a = Math.imul(a ^ (a >>> 16), 0x45d9f3b);
  a = Math.imul(a ^ (a >>> 16), 0x45d9f3b);
  return (a ^ (a >>> 16)) >>> 0;
}

export function crashOp(seed: number, i: number): CrashOp {
  let s = mix(seed * 1_000_003 + i);
  const next = (n: number) => {
    s = mix(s + 0x9e3779b9);
    return s % n;
  };
  if (next(8) === 0) {
    const length = (1 + next(128)) * 512;
    const offset = next((CRASH_VSIZE - length) / 512 + 1) * 512;
    return { kind: 'trim', offset, length };
  }
  const length = 1 + next(next(4) === 0 ? 65536 : 4096);
  const offset = next(CRASH_VSIZE - length + 1);
  const data = new Uint8Array(length);
  // Content names the op, so stale or foreign bytes can never look right.
  for (let k = 0; k < length; k += 4) {
    const v = mix(i * 65599 + k) ^ seed;
    data[k] = v & 0xff;
    if (k + 1 < length) data[k + 1] = (v >>> 8) & 0xff;
    if (k + 2 < length) data[k + 2] = (v >>> 16) & 0xff;
    if (k + 3 < length) data[k + 3] = v >>> 24;
  }
  return { kind: 'write', offset, data };
}

export function applyOp(model: Uint8Array, op: CrashOp): void {
  if (op.kind === 'write') model.set(op.data, op.offset);
  else model.fill(0, op.offset, op.offset + op.length);
}

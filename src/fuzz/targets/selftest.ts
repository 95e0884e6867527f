/**
 * A target that fails on purpose, to show the harness tells every class apart: each input
 * ends, by a hash of its bytes, as a typed error, the seed's output, changed output (guarded
 * or not), an untyped error, an unhandled rejection, or a synchronous endless loop.
 * Not part of a default run; `--target selftest` asks for it.
 */
import { InvalidArgumentError } from '../../io/errors.ts';
import type { Target } from '../target.ts';

function hash(b: Uint8Array): number {
  let h = 0x811c9dc5;
  for (const x of b) h = Math.imul(h ^ x, 0x01000193) >>> 0;
  return h;
}

export const selftestTarget: Target = {
  name: 'selftest',
  async seeds() {
    const bytes = new Uint8Array(64).fill(7);
    return [
      { name: 'guarded', bytes, fields: [{ at: 0, width: 8 }], guarded: true },
      { name: 'plain', bytes, fields: [{ at: 0, width: 8 }], guarded: false },
    ];
  },
  async run(_seed, input) {
    if (input.length === 64 && input.every((x) => x === 7)) return { output: input };
    switch (hash(input) % 8) {
      case 0:
        throw new InvalidArgumentError('selftest: refused');
      case 1:
        throw new TypeError('selftest: untyped');
      case 2:
        void Promise.reject(new RangeError('selftest: nobody listens'));
        return { output: Uint8Array.of(7) };
      case 3:
        for (;;);
      case 4:
        return { output: Uint8Array.of(1) };
      default:
        throw new InvalidArgumentError('selftest: refused');
    }
  },
};

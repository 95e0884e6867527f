/** Bytes of several sources one after another, as one source. */
import type { ByteSource } from './types.ts';
import { readable } from './util.ts';

/** Several sources end to end (e.g. a tar header, a zfile and a tar trailer: a layer blob push wraps). */
export class ConcatSource implements ByteSource {
  readonly name: string;
  readonly size: number;
  readonly #parts: Array<{ at: number; src: ByteSource }> = [];
  constructor(name: string, parts: readonly ByteSource[]) {
    this.name = name;
    let at = 0;
    for (const src of parts) {
      this.#parts.push({ at, src });
      at += src.size;
    }
    this.size = at;
  }
  async read(buf: Uint8Array, offset: number): Promise<number> {
    const n = readable(buf, offset, this.size).length;
    let done = 0;
    for (const p of this.#parts) {
      if (done === n) break;
      const pos = offset + done;
      if (pos >= p.at + p.src.size || pos < p.at) continue;
      const want = Math.min(n - done, p.at + p.src.size - pos);
      const got = await p.src.read(buf.subarray(done, done + want), pos - p.at);
      if (got !== want) return done + got;
      done += want;
    }
    return done;
  }
  async close(): Promise<void> {
    for (const p of this.#parts) await p.src.close();
  }
}

/**
 * A layer engine without a filesystem, for the pipeline's own checks (cache keys, pushes,
 * failures) where ext4 adds nothing: block 0 holds a cursor, and each layer appends its tar
 * bytes at the cursor (sector-aligned), so every layer's delta is its tar plus one sector.
 */
import type { LayerEngine } from '../../../src/convert/engine.ts';

export const rawEngine: LayerEngine = {
  version: 'raw-test/1',
  async apply(dev, tar, opts) {
    const head = new Uint8Array(512);
    const dv = new DataView(head.buffer);
    if (opts.format) {
      head.set(opts.format.uuid, 0);
      dv.setFloat64(16, 4096, true);
    } else await dev.read(head, 0);
    let at = dv.getFloat64(16, true);
    let bytes = 0;
    let pending: Uint8Array[] = [];
    let size = 0;
    const flush = async () => {
      if (size === 0) return;
      const buf = new Uint8Array(Math.ceil(size / 512) * 512);
      let o = 0;
      for (const p of pending) {
        buf.set(p, o);
        o += p.length;
      }
      await dev.write(buf, at);
      at += buf.length;
      pending = [];
      size = 0;
    };
    for await (const c of tar) {
      pending.push(Uint8Array.from(c));
      size += c.length;
      bytes += c.length;
      if (size >= 1 << 20) await flush();
    }
    await flush();
    dv.setFloat64(16, at, true);
    await dev.write(head, 0);
    return { entries: 0, files: 0, dirs: 0, whiteouts: 0, bytes, dataBytes: bytes, metadataBytes: 512 };
  },
};

/**
 * The server side of bench/nbd.ts, run as its own (pinned) process:
 *   node bench/nbd-server.ts SOCKET mem RAW          a MemoryDevice holding RAW
 *   node bench/nbd-server.ts SOCKET stack LAYER...   the stack, as `obd serve` opens it
 *   node bench/nbd-server.ts SOCKET sync LAYER...    the stack over sources that read with
 *                                                    pread in the event loop (what a
 *                                                    synchronous FileSource would give)
 * Prints "ready" once listening; SIGTERM closes it.
 */
import { openSync, readFileSync, closeSync, fstatSync, readSync } from 'node:fs';
import { openImage, openLayerSource } from '../src/image/open.ts';
import { MemoryDevice } from '../src/io/memory.ts';
import type { BlockDevice, ByteSource } from '../src/io/types.ts';
import { Stack } from '../src/lsmt/stack.ts';
import { NbdServer } from '../src/nbd/index.ts';

class SyncFileSource implements ByteSource {
  readonly name: string;
  readonly size: number;
  readonly #fd: number;
  constructor(path: string) {
    this.name = path;
    this.#fd = openSync(path, 'r');
    this.size = fstatSync(this.#fd).size;
  }
  async read(buf: Uint8Array, offset: number): Promise<number> {
    return readSync(this.#fd, buf, 0, Math.max(0, Math.min(buf.length, this.size - offset)), offset);
  }
  async close(): Promise<void> {
    closeSync(this.#fd);
  }
}

const [socket, mode, ...files] = process.argv.slice(2);
let dev: BlockDevice;
if (mode === 'mem') {
  const bytes = readFileSync(files[0]!);
  const m = new MemoryDevice(bytes.length, 'mem');
  await m.write(bytes, 0);
  dev = m;
} else if (mode === 'stack') {
  dev = await openImage(files);
} else if (mode === 'sync') {
  dev = new Stack(await Promise.all(files.map((f) => openLayerSource(new SyncFileSource(f)))));
} else {
  throw new Error(`unknown mode ${mode}`);
}
const server = new NbdServer({ exports: { '': { device: dev, readOnly: true } } });
await server.listen({ socket: socket! });
process.stdout.write(`ready ${dev.layerCount}\n`);
process.on('SIGTERM', () => {
  void server
    .close()
    .then(() => dev.close())
    .then(() => process.exit(0));
});

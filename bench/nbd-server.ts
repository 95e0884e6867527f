/**
 * The server side of bench/nbd.ts, run as its own (pinned) process:
 *   node bench/nbd-server.ts SOCKET mem RAW          a MemoryDevice holding RAW
 *   node bench/nbd-server.ts SOCKET stack LAYER...   the stack, as `obd serve` opens it
 * Prints "ready" once listening; SIGTERM closes it.
 */
import { readFileSync } from 'node:fs';
import { openImage } from '../src/image/open.ts';
import { MemoryDevice } from '../src/io/memory.ts';
import type { BlockDevice } from '../src/io/types.ts';
import { NbdServer } from '../src/nbd/index.ts';

const [socket, mode, ...files] = process.argv.slice(2);
let dev: BlockDevice;
if (mode === 'mem') {
  const bytes = readFileSync(files[0]!);
  const m = new MemoryDevice(bytes.length, 'mem');
  await m.write(bytes, 0);
  dev = m;
} else if (mode === 'stack') {
  dev = await openImage(files);
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

/** Unix listening sockets: the stale file a crashed server left is removed, a live one refused. */
import { lstat, unlink } from 'node:fs/promises';
import net from 'node:net';

/**
 * Removes `path` before listening on it when it is a socket nobody answers on; throws what
 * `fail` makes of the reason when it is another kind of file or a server is still there.
 */
export async function removeStaleSocket(path: string, fail: (message: string) => Error): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (!st) return;
  if (!st.isSocket()) throw fail(`${path}: exists and is not a socket`);
  const live = await new Promise<boolean>((resolve) => {
    const c = net.connect(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (live) throw fail(`${path}: another server is listening on this socket`);
  await unlink(path);
}

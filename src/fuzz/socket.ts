/** Raw sessions with a server under fuzzing, shared by the socket targets (NBD, control API). */
import net from 'node:net';

/** Sends `input`, half-closes, and resolves when the server closes (false after `ms`). */
export function session(socket: string, input: Uint8Array, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(socket, () => s.end(input));
    const t = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, ms);
    s.on('data', () => {});
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

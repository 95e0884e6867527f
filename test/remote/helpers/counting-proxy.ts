/**
 * A reverse proxy in front of a registry that counts what goes through it: every blob GET
 * with the byte range it asked for and the body bytes it carried, so a test can tell how
 * often each byte of each blob was fetched. Loopback only; stop() ends every connection.
 */
import http from 'node:http';
import type net from 'node:net';
import { listenTracked } from './fault-proxy.ts';

export interface BlobFetch {
  digest: string;
  /** The byte ranges asked for, [start, end) each (one GET may ask several: multipart answers). */
  ranges: [number, number][];
  /** Body bytes delivered (with a multipart answer's part headers). */
  bytes: number;
}

/** The ranges of a Range header (`bytes=a-b,c-d`); a whole blob of `size` when there is none. */
function rangesOf(header: string | undefined, size: number): [number, number][] {
  const m = /^bytes=(.+)$/.exec(header ?? '');
  if (!m) return [[0, size]];
  return m[1]!.split(',').map((r) => {
    const [a, b] = r.trim().split('-');
    return [Number(a), b ? Number(b) + 1 : size] as [number, number];
  });
}

export interface CountingProxy {
  readonly host: string;
  readonly port: number;
  readonly fetches: BlobFetch[];
  /** Body bytes of blob GETs so far. */
  blobBytes(): number;
  /**
   * Bytes of each blob fetched more than once (overlapping ranges of the same digest),
   * summed over blobs: 0 when every byte came once.
   */
  refetchedBytes(): number;
  stop(): Promise<void>;
}

export async function startCountingProxy(upstream: { host: string; port: number }): Promise<CountingProxy> {
  const agent = new http.Agent({ keepAlive: true });
  const sockets = new Set<net.Socket>();
  const fetches: BlobFetch[] = [];
  const server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    const m = req.method === 'GET' ? /\/blobs\/(sha256:[0-9a-f]{64})/.exec(url) : null;
    const up = http.request({ host: upstream.host, port: upstream.port, method: req.method, path: url, headers: req.headers, agent }, (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      if (m && (ur.statusCode === 200 || ur.statusCode === 206)) {
        const total = Number(/\/(\d+)$/.exec(String(ur.headers['content-range'] ?? ''))?.[1] ?? ur.headers['content-length'] ?? 0);
        const f: BlobFetch = { digest: m[1]!, ranges: ur.statusCode === 200 ? [[0, total]] : rangesOf(req.headers.range, total), bytes: 0 };
        fetches.push(f);
        ur.on('data', (c: Buffer) => (f.bytes += c.length));
      }
      ur.pipe(res);
    });
    up.on('error', () => res.socket?.destroy());
    req.pipe(up);
  });
  const port = await listenTracked(server, sockets);
  return {
    host: `127.0.0.1:${port}`,
    port,
    fetches,
    blobBytes: () => fetches.reduce((n, f) => n + f.bytes, 0),
    refetchedBytes() {
      const byDigest = new Map<string, [number, number][]>();
      for (const f of fetches) byDigest.set(f.digest, [...(byDigest.get(f.digest) ?? []), ...f.ranges]);
      let again = 0;
      for (const list of byDigest.values()) {
        let end = 0;
        for (const [a, b] of [...list].sort((x, y) => x[0] - y[0])) {
          again += Math.max(0, Math.min(end, b) - a);
          end = Math.max(end, b);
        }
      }
      return again;
    },
    async stop() {
      for (const s of sockets) s.destroy();
      agent.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

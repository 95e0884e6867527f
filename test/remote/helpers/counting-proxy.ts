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
  /** First byte asked for (0 without a Range header). */
  start: number;
  /** Body bytes delivered. */
  bytes: number;
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
    const range = /^bytes=(\d+)-/.exec(String(req.headers.range ?? ''));
    const up = http.request({ host: upstream.host, port: upstream.port, method: req.method, path: url, headers: req.headers, agent }, (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      if (m && (ur.statusCode === 200 || ur.statusCode === 206)) {
        const f: BlobFetch = { digest: m[1]!, start: range ? Number(range[1]) : 0, bytes: 0 };
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
      const byDigest = new Map<string, BlobFetch[]>();
      for (const f of fetches) byDigest.set(f.digest, [...(byDigest.get(f.digest) ?? []), f]);
      let again = 0;
      for (const list of byDigest.values()) {
        let end = 0;
        for (const f of [...list].sort((a, b) => a.start - b.start)) {
          again += Math.max(0, Math.min(end, f.start + f.bytes) - f.start);
          end = Math.max(end, f.start + f.bytes);
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

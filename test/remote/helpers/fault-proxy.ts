/**
 * An HTTP proxy in front of a registry that injects faults chosen per request by `rule`:
 * connection resets, error statuses, stalls (before headers or mid-body), truncated or
 * corrupted bodies, forced 401s (expired tokens), ignored Range, redirects. It works as a
 * reverse proxy (clients talk to it as if it were the registry; Host is passed through so
 * upload Locations point back at it) and as a forward proxy (absolute-URI requests).
 */
import http from 'node:http';
import type net from 'node:net';

export type Fault =
  | { kind: 'reset' }
  | { kind: 'status'; status: number }
  | { kind: 'stall' }
  | { kind: 'stall-body' }
  | { kind: 'truncate'; keep?: number }
  | { kind: 'corrupt' }
  | { kind: 'unauthorized'; challenge: string }
  | { kind: 'ignore-range' }
  | { kind: 'redirect'; origin: string };

export interface SeenRequest {
  n: number;
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  /** True for requests that arrived through a redirect (path under /__redirected__). */
  redirected: boolean;
  fault: Fault['kind'] | undefined;
}

export interface FaultProxy {
  readonly port: number;
  readonly host: string;
  /** Decides the fault for each request (undefined = forward untouched). */
  rule: (r: SeenRequest) => Fault | undefined;
  /** Headers added upstream to redirected requests (a pre-signed URL's stand-in). */
  redirectHeaders: Record<string, string>;
  readonly seen: SeenRequest[];
  stop(): Promise<void>;
}

const REDIRECT_PREFIX = '/__redirected__';

export async function startFaultProxy(upstream: { host: string; port: number }): Promise<FaultProxy> {
  const agent = new http.Agent({ keepAlive: true });
  const sockets = new Set<net.Socket>();
  const seen: SeenRequest[] = [];
  let n = 0;
  const state: FaultProxy = {
    port: 0,
    host: '',
    rule: () => undefined,
    redirectHeaders: {},
    seen,
    async stop() {
      for (const s of sockets) s.destroy();
      agent.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };

  const server = http.createServer((req, res) => {
    let target = { host: upstream.host, port: upstream.port, path: req.url ?? '/' };
    if (/^https?:\/\//.test(target.path)) {
      const u = new URL(target.path);
      target = { host: u.hostname, port: Number(u.port || 80), path: u.pathname + u.search };
    }
    const redirected = target.path.startsWith(REDIRECT_PREFIX);
    if (redirected) target.path = target.path.slice(REDIRECT_PREFIX.length);
    const info: SeenRequest = { n: n++, method: req.method ?? 'GET', url: target.path, headers: req.headers, redirected, fault: undefined };
    seen.push(info);
    const fault = redirected ? undefined : state.rule(info);
    info.fault = fault?.kind;
    if (fault?.kind === 'reset') {
      req.socket.destroy();
      return;
    }
    if (fault?.kind === 'stall') return;
    if (fault?.kind === 'status') {
      req.resume();
      res.writeHead(fault.status, { 'content-type': 'text/plain' }).end('injected failure');
      return;
    }
    if (fault?.kind === 'unauthorized') {
      req.resume();
      res.writeHead(401, { 'www-authenticate': fault.challenge, 'content-type': 'application/json' }).end('{"errors":[{"code":"UNAUTHORIZED","message":"token expired (injected)"}]}');
      return;
    }
    if (fault?.kind === 'redirect') {
      req.resume();
      res.writeHead(307, { location: `${fault.origin}${REDIRECT_PREFIX}${target.path}` }).end();
      return;
    }
    const headers = { ...req.headers };
    if (fault?.kind === 'ignore-range') delete headers.range;
    if (redirected) {
      delete headers.authorization;
      Object.assign(headers, state.redirectHeaders);
    }
    const up = http.request({ host: target.host, port: target.port, method: req.method, path: target.path, headers, agent }, (ur) => {
      const status = ur.statusCode ?? 502;
      if (fault?.kind === 'stall-body') {
        res.writeHead(status, ur.headers);
        res.flushHeaders();
        ur.destroy();
        return;
      }
      if (fault?.kind === 'truncate' || fault?.kind === 'corrupt') {
        const chunks: Buffer[] = [];
        ur.on('data', (c: Buffer) => chunks.push(c));
        ur.on('end', () => {
          const body = Buffer.concat(chunks);
          res.writeHead(status, ur.headers);
          if (fault.kind === 'corrupt') {
            if (body.length > 0) body[body.length >> 1] ^= 0x5a;
            res.end(body);
          } else {
            res.write(body.subarray(0, Math.min(body.length - 1, fault.keep ?? body.length >> 1)));
            setImmediate(() => res.socket?.destroy());
          }
        });
        return;
      }
      res.writeHead(status, ur.headers);
      ur.pipe(res);
    });
    up.on('error', () => res.socket?.destroy());
    req.pipe(up);
  });
  const port = await listenTracked(server, sockets);
  Object.assign(state, { port, host: `127.0.0.1:${port}` });
  return state;
}

/** Listens on a free loopback port, keeping every connection in `sockets` (so stop() can end them). */
export async function listenTracked(server: http.Server, sockets: Set<net.Socket>): Promise<number> {
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as net.AddressInfo).port;
}

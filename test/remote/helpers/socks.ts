/**
 * A real SOCKS5 proxy for tests (Debian's microsocks on 127.0.0.1, optionally with RFC 1929
 * user/password), and a TCP relay to put in front of it that counts, records and cuts: the
 * bytes clients send (to see what the handshake named) and a cut after N bytes toward the
 * client, chosen per connection (a proxy dropping connections mid-body).
 */
import { spawn } from 'node:child_process';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './registry.ts';

export const MICROSOCKS_BIN = '/usr/bin/microsocks';

export interface RunningSocks {
  readonly port: number;
  /** `127.0.0.1:PORT`. */
  readonly host: string;
  stop(): Promise<void>;
}

export async function startMicrosocks(auth?: { user: string; password: string }): Promise<RunningSocks> {
  const port = await freePort();
  const args = ['-i', '127.0.0.1', '-p', String(port), ...(auth ? ['-u', auth.user, '-P', auth.password] : [])];
  const child = spawn(MICROSOCKS_BIN, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr = (stderr + d).slice(-2000)));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
  };
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`microsocks exited early: ${stderr}`);
    if (await canConnect(port)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`microsocks did not listen on ${port}: ${stderr}`);
    }
    await sleep(20);
  }
  return { port, host: `127.0.0.1:${port}`, stop };
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

export interface Relay {
  readonly port: number;
  readonly host: string;
  /** Connections accepted so far. */
  connections: number;
  /** Bytes passed toward clients, all connections. */
  bytesDown: number;
  /** The first bytes each client sent (up to 512), to see what its handshake named. */
  readonly firstBytes: Buffer[];
  /** For connection n (0-based): cut it after this many bytes toward the client, or undefined to pass all. */
  cutAfter: (n: number) => number | undefined;
  stop(): Promise<void>;
}

export async function startRelay(upstreamPort: number): Promise<Relay> {
  const sockets = new Set<net.Socket>();
  const relay: Relay = {
    port: 0,
    host: '',
    connections: 0,
    bytesDown: 0,
    firstBytes: [],
    cutAfter: () => undefined,
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const server = net.createServer((client) => {
    const n = relay.connections++;
    const cut = relay.cutAfter(n);
    const up = net.connect(upstreamPort, '127.0.0.1');
    sockets.add(client);
    sockets.add(up);
    let head = Buffer.alloc(0);
    relay.firstBytes[n] = head;
    let down = 0;
    const both = () => {
      client.destroy();
      up.destroy();
    };
    client.on('data', (d: Buffer) => {
      if (head.length < 512) relay.firstBytes[n] = head = Buffer.concat([head, d]).subarray(0, 512);
      up.write(d);
    });
    up.on('data', (d: Buffer) => {
      if (cut !== undefined && down + d.length >= cut) {
        client.write(d.subarray(0, cut - down));
        relay.bytesDown += cut - down;
        both();
        return;
      }
      down += d.length;
      relay.bytesDown += d.length;
      client.write(d);
    });
    client.on('end', () => up.end());
    up.on('end', () => client.end());
    for (const s of [client, up]) {
      s.on('error', both);
      s.on('close', () => {
        sockets.delete(s);
        both();
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  Object.assign(relay, { port, host: `127.0.0.1:${port}` });
  return relay;
}

/**
 * The target a client's first bytes asked the SOCKS5 proxy for (RFC 1928 §4), after the
 * greeting and an RFC 1929 sub-negotiation: a name (socks5h) or an address (socks5).
 */
export function socksTarget(first: Buffer): { kind: 'name' | 'ipv4' | 'ipv6'; host: string; user: string | undefined } {
  let p = 2 + first[1]!;
  let user: string | undefined;
  if (first[p] === 1) {
    const ulen = first[p + 1]!;
    user = first.subarray(p + 2, p + 2 + ulen).toString();
    p += 2 + ulen + 1 + first[p + 2 + ulen]!;
  }
  if (first[p] !== 5 || first[p + 1] !== 1) throw new Error(`no SOCKS5 CONNECT at byte ${p}: ${first.subarray(0, 40).toString('hex')}`);
  const atyp = first[p + 3];
  if (atyp === 3) return { kind: 'name', host: first.subarray(p + 5, p + 5 + first[p + 4]!).toString(), user };
  if (atyp === 1) return { kind: 'ipv4', host: [...first.subarray(p + 4, p + 8)].join('.'), user };
  return { kind: 'ipv6', host: first.subarray(p + 4, p + 20).toString('hex'), user };
}

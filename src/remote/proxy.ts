/**
 * Proxies for registry traffic: which one a request goes through, and the keep-alive agents
 * that speak them. http:// and https:// proxies go through node:http's own proxy support
 * (CONNECT for https targets); socks5:// (names resolved here) and socks5h:// (names resolved
 * by the proxy), with RFC 1929 user/password from the URL, go through the `socks` library's
 * handshake under the agent. A proxy this client cannot speak is an error, never a silent
 * direct connection (docs/service.md §1).
 *
 * Without an explicit proxy, the environment is read as curl reads it: `https_proxy` /
 * `HTTPS_PROXY` for https URLs, `http_proxy` / `HTTP_PROXY` for http ones, `all_proxy` /
 * `ALL_PROXY` for both, and `no_proxy` / `NO_PROXY` exempting hosts.
 */
import { lookup } from 'node:dns/promises';
import type { Agent as HttpAgent, AgentOptions as HttpAgentOptions, ClientRequestArgs } from 'node:http';
import type { AgentOptions as HttpsAgentOptions } from 'node:https';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { http, https } from '../io/builtins.ts';
import { InvalidArgumentError } from '../io/errors.ts';
import { AuthError, NetworkError, TimeoutError } from './errors.ts';

export type ProxyScheme = 'http' | 'https' | 'socks5' | 'socks5h';
const SCHEMES: readonly ProxyScheme[] = ['http', 'https', 'socks5', 'socks5h'];
const DEFAULT_PORT: Record<ProxyScheme, number> = { http: 80, https: 443, socks5: 1080, socks5h: 1080 };

export interface ProxySpec {
  readonly scheme: ProxyScheme;
  readonly host: string;
  readonly port: number;
  readonly username: string | undefined;
  readonly password: string | undefined;
  /** The URL as given, for node:http's proxy support (credentials included). */
  readonly href: string;
  /** For messages: scheme, host and port, never the credentials. */
  readonly display: string;
  /** Where the setting came from (`--proxy`, `HTTPS_PROXY`, …), for messages. */
  readonly source: string;
}

/** A proxy URL that is malformed or of a scheme this client does not speak. */
export class UnsupportedProxyError extends InvalidArgumentError {
  readonly source: string;
  constructor(source: string, message: string) {
    super(`${source}: ${message}`);
    this.source = source;
  }
}

/** The SOCKS proxy refused the credentials, or wants credentials the URL does not give. */
export class ProxyAuthError extends AuthError {}

/** Parses a proxy URL (`socks5h://user:pw@127.0.0.1:1080`); throws for anything it cannot speak. */
export function parseProxy(text: string, source = '--proxy'): ProxySpec {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UnsupportedProxyError(source, `"${text.slice(0, 200)}" is not a URL; give SCHEME://HOST:PORT with a scheme of ${SCHEMES.join(', ')}`);
  }
  const scheme = url.protocol.replace(/:$/, '').toLowerCase() as ProxyScheme;
  if (!SCHEMES.includes(scheme)) {
    throw new UnsupportedProxyError(source, `proxy scheme "${scheme}" is not one this client speaks (${SCHEMES.join(', ')}); refusing to send requests around it`);
  }
  if (!url.hostname) throw new UnsupportedProxyError(source, `no proxy host in "${scheme}://…"`);
  if ((url.pathname !== '' && url.pathname !== '/') || url.search || url.hash) {
    throw new UnsupportedProxyError(source, `a proxy URL is SCHEME://[USER:PASSWORD@]HOST[:PORT], without a path or query`);
  }
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const port = url.port ? Number(url.port) : DEFAULT_PORT[scheme];
  const username = url.username ? decodeURIComponent(url.username) : undefined;
  const password = url.password ? decodeURIComponent(url.password) : undefined;
  if ((scheme === 'socks5' || scheme === 'socks5h') && (Buffer.byteLength(username ?? '') > 255 || Buffer.byteLength(password ?? '') > 255)) {
    throw new UnsupportedProxyError(source, 'SOCKS5 user names and passwords are at most 255 bytes (RFC 1929)');
  }
  const hostPart = host.includes(':') ? `[${host}]` : host;
  return { scheme, host, port, username, password, href: url.href, display: `${scheme}://${hostPart}:${port}`, source };
}

/**
 * Picks the proxy of each request: the explicit one for every request, else the environment's
 * for the URL's scheme unless NO_PROXY exempts the host. Every setting is parsed up front, so
 * a proxy that cannot be spoken fails before the first request rather than being skipped.
 */
export class ProxyRoutes {
  readonly #explicit: ProxySpec | undefined;
  readonly #http: ProxySpec | undefined;
  readonly #https: ProxySpec | undefined;
  readonly #noProxy: NoProxy;

  constructor(explicit?: string, env: NodeJS.ProcessEnv = process.env) {
    if (explicit !== undefined && explicit !== '') {
      this.#explicit = parseProxy(explicit, '--proxy');
      this.#noProxy = new NoProxy('');
      return;
    }
    const pick = (...names: string[]): ProxySpec | undefined => {
      for (const n of names) {
        const v = env[n];
        if (v !== undefined && v !== '') return parseProxy(v, n);
      }
      return undefined;
    };
    this.#http = pick('http_proxy', 'HTTP_PROXY', 'all_proxy', 'ALL_PROXY');
    this.#https = pick('https_proxy', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY');
    this.#noProxy = new NoProxy(env.no_proxy || env.NO_PROXY || '');
  }

  /** The proxy for this URL, or undefined for a direct connection. */
  forUrl(url: URL): ProxySpec | undefined {
    if (this.#explicit) return this.#explicit;
    const spec = url.protocol === 'https:' ? this.#https : this.#http;
    if (!spec || this.#noProxy.exempts(url)) return undefined;
    return spec;
  }
}

/** NO_PROXY entries: `*`, host names (and their subdomains; a leading dot is optional), IPs, CIDR blocks, each with an optional `:port`. */
class NoProxy {
  readonly #all: boolean;
  readonly #entries: { host: string; port: number | undefined }[] = [];
  readonly #blocks = new net.BlockList();
  #hasBlocks = false;

  constructor(text: string) {
    const items = text.split(/[\s,]+/).filter(Boolean);
    this.#all = items.includes('*');
    for (const raw of items) {
      const m = /^(?:\[([^\]]+)\]|([^:]+(?::[^:]+)*?))(?::(\d+))?$/.exec(raw.toLowerCase());
      if (!m) continue;
      const host = (m[1] ?? m[2] ?? '').replace(/^\*?\./, '');
      const slash = host.indexOf('/');
      if (slash > 0 && net.isIP(host.slice(0, slash))) {
        const prefix = Number(host.slice(slash + 1));
        const family = net.isIP(host.slice(0, slash)) === 6 ? 'ipv6' : 'ipv4';
        if (Number.isInteger(prefix)) {
          this.#blocks.addSubnet(host.slice(0, slash), prefix, family);
          this.#hasBlocks = true;
        }
        continue;
      }
      this.#entries.push({ host, port: m[3] === undefined ? undefined : Number(m[3]) });
    }
  }

  exempts(url: URL): boolean {
    if (this.#all) return true;
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1').toLowerCase();
    const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
    for (const e of this.#entries) {
      if (e.port !== undefined && e.port !== port) continue;
      if (host === e.host || (!net.isIP(host) && host.endsWith(`.${e.host}`))) return true;
    }
    const family = net.isIP(host);
    return this.#hasBlocks && family !== 0 && this.#blocks.check(host, family === 6 ? 'ipv6' : 'ipv4');
  }
}

export interface AgentOptions extends HttpAgentOptions {
  /** Limit for reaching the target through a SOCKS proxy: TCP connect plus handshake. */
  connectTimeoutMs: number;
  /** For https targets. */
  rejectUnauthorized?: boolean;
}

/** A keep-alive agent for `protocol` targets, direct or through `proxy`. */
export function makeAgent(protocol: 'http:' | 'https:', proxy: ProxySpec | undefined, opts: AgentOptions): HttpAgent {
  const { connectTimeoutMs, ...agentOpts } = opts;
  if (proxy === undefined || proxy.scheme === 'http' || proxy.scheme === 'https') {
    // node:http reads only the keys it is handed here, never the process environment.
    const proxyEnv = proxy ? { HTTP_PROXY: proxy.href, HTTPS_PROXY: proxy.href, NO_PROXY: '' } : undefined;
    const o = { ...agentOpts, ...(proxyEnv ? { proxyEnv } : {}) };
    return protocol === 'https:' ? new (https().Agent)(o) : new (http().Agent)(o);
  }
  return new (socksAgent(protocol))(proxy, connectTimeoutMs, agentOpts);
}

type ConnectCallback = (err: Error | null, stream: Duplex) => void;
type ConnectOptions = ClientRequestArgs;

type SocksAgentClass = new (proxy: ProxySpec, timeoutMs: number, opts: HttpsAgentOptions) => HttpAgent;
const socksAgents = new Map<'http:' | 'https:', SocksAgentClass>();

/**
 * The agent class reaching targets through a SOCKS5 proxy, over node:http's or node:https's
 * Agent; made on first use, since extending https.Agent loads node:https and node:tls. Over
 * https, TLS runs inside the tunnel through https.Agent's own connect, which keeps its session
 * cache.
 */
function socksAgent(protocol: 'http:' | 'https:'): SocksAgentClass {
  const made = socksAgents.get(protocol);
  if (made) return made;
  const tls = protocol === 'https:';
  const Base: typeof HttpAgent = tls ? https().Agent : http().Agent;
  const C = class SocksAgent extends Base {
    readonly #proxy: ProxySpec;
    readonly #timeoutMs: number;
    constructor(proxy: ProxySpec, timeoutMs: number, opts: HttpsAgentOptions) {
      super(opts);
      this.#proxy = proxy;
      this.#timeoutMs = timeoutMs;
    }
    // node:http takes the socket from the callback when this returns nothing.
    override createConnection(options: ConnectOptions, cb?: ConnectCallback): undefined {
      socksConnect(this.#proxy, options, tls ? 443 : 80, this.#timeoutMs).then(
        (socket) => cb?.(null, tls ? super.createConnection({ ...options, socket } as ConnectOptions)! : socket),
        (e: Error) => cb?.(e, undefined as never),
      );
      return undefined;
    }
  };
  socksAgents.set(protocol, C);
  return C;
}

/** A TCP stream to the request's target through the SOCKS5 proxy, handshake done. */
async function socksConnect(proxy: ProxySpec, options: ConnectOptions, defaultPort: number, timeoutMs: number): Promise<net.Socket> {
  const host = String(options.hostname ?? options.host ?? 'localhost').replace(/^\[(.*)\]$/, '$1');
  const port = Number(options.port ?? defaultPort);
  const target = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  const where = `${target} via ${proxy.display}`;
  let address = host;
  if (proxy.scheme === 'socks5' && net.isIP(host) === 0) {
    try {
      address = (await lookup(host)).address;
    } catch (e) {
      throw new NetworkError(where, `cannot resolve ${host} here (socks5h:// lets the proxy resolve it): ${(e as Error).message}`, undefined, { cause: e });
    }
  }
  // Loaded here: the library and its address parser cost ~20 ms of start-up that direct connections never use.
  const { SocksClient } = await import('socks');
  try {
    const { socket } = await SocksClient.createConnection({
      proxy: { host: proxy.host, port: proxy.port, type: 5, ...(proxy.username !== undefined ? { userId: proxy.username, password: proxy.password ?? '' } : {}) },
      command: 'connect',
      destination: { host: address, port },
      timeout: timeoutMs,
      set_tcp_nodelay: true,
    });
    return socket;
  } catch (e) {
    throw socksError(where, proxy, e, timeoutMs);
  }
}

/** The `socks` library's failure as a typed error: refused credentials are final, the rest retryable. */
function socksError(where: string, proxy: ProxySpec, e: unknown, timeoutMs: number): Error {
  const msg = (e as Error)?.message ?? String(e);
  if (/Authentication failed/i.test(msg)) return new ProxyAuthError(where, `the SOCKS5 proxy refused the user name and password from ${proxy.source}`, undefined, { cause: e });
  if (/no accepted authentication type/i.test(msg)) {
    const what = proxy.username === undefined ? `wants a user name and password; give them in ${proxy.source} as ${proxy.scheme}://USER:PASSWORD@HOST:PORT` : 'accepts none of the offered authentication methods';
    return new ProxyAuthError(where, `the SOCKS5 proxy ${what}`, undefined, { cause: e });
  }
  if (/timed out/i.test(msg)) return new TimeoutError(where, `SOCKS5 proxy connection and handshake not done within ${timeoutMs} ms`, undefined, { cause: e });
  return new NetworkError(where, `SOCKS5 proxy: ${msg}`, undefined, { cause: e });
}

/**
 * Starts Debian's docker-registry (CNCF distribution) on 127.0.0.1 for a test: anonymous,
 * htpasswd Basic auth (bcrypt hash from the system crypt(3) through perl), or Bearer tokens
 * from the test token server. `stop()` kills it and removes its directory.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { makeTempDir, removeTempDir } from '../../helpers/temp.ts';

export const REGISTRY_BIN = '/usr/bin/docker-registry';

/** Ports fetch refuses to connect to; node:http does not care, but curl users and fetch might. */
const BAD_PORTS = new Set([1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060, 5061, 6000, 6566, 6665, 6666, 6667, 6668, 6669, 6679, 6697, 10080]);

/** A free loopback TCP port (bound then released; fine for tests on one machine). */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const s = net.createServer();
      s.once('error', reject);
      s.listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    if (!BAD_PORTS.has(port)) return port;
  }
}

/** A bcrypt htpasswd line, hashed by glibc/libxcrypt's crypt(3) via perl (always on Debian). */
export function htpasswdLine(user: string, password: string): string {
  const alphabet = './ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  const salt = [...randomBytes(21)].map((b) => alphabet[b & 63]).join('') + 'e';
  const hash = execFileSync('perl', ['-e', 'print crypt($ARGV[0], $ARGV[1])', password, `$2b$05$${salt}`], { encoding: 'utf8' });
  if (!hash.startsWith('$2b$05$')) throw new Error(`crypt(3) did not produce bcrypt: ${hash}`);
  return `${user}:${hash}`;
}

export interface TokenAuthConfig {
  realm: string;
  service: string;
  issuer: string;
  certPath: string;
}

export interface RegistryOptions {
  /** htpasswd users (Basic auth). */
  users?: Record<string, string>;
  /** Bearer token auth (see token-server.ts). */
  token?: TokenAuthConfig;
  /** Serve HTTPS with this certificate and key (PEM files). */
  tls?: { certPath: string; keyPath: string };
  /** Pin the registry to these CPUs (taskset list, e.g. "1"), for benchmarks. */
  cpus?: string;
  /** Run the registry at this nice value (e.g. 19: it stands in for a remote one in a benchmark). */
  nice?: number;
}

export interface RunningRegistry {
  readonly host: string;
  readonly port: number;
  readonly url: string;
  readonly dir: string;
  stop(): Promise<void>;
}

export async function startRegistry(opts: RegistryOptions = {}): Promise<RunningRegistry> {
  const dir = await makeTempDir('obd-registry-');
  const port = await freePort();
  let auth = '';
  if (opts.users) {
    const lines = Object.entries(opts.users).map(([u, p]) => htpasswdLine(u, p));
    await writeFile(path.join(dir, 'htpasswd'), lines.join('\n') + '\n');
    auth = `auth:\n  htpasswd:\n    realm: obd-test\n    path: ${path.join(dir, 'htpasswd')}\n`;
  } else if (opts.token) {
    const t = opts.token;
    auth = `auth:\n  token:\n    realm: ${t.realm}\n    service: ${t.service}\n    issuer: ${t.issuer}\n    rootcertbundle: ${t.certPath}\n`;
  }
  const config = [
    'version: 0.1',
    'log:',
    '  level: error',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${path.join(dir, 'data')}`,
    '  cache:',
    '    blobdescriptor: inmemory',
    '  delete:',
    '    enabled: true',
    'http:',
    `  addr: 127.0.0.1:${port}`,
    `  secret: ${randomBytes(16).toString('hex')}`,
    ...(opts.tls ? ['  tls:', `    certificate: ${opts.tls.certPath}`, `    key: ${opts.tls.keyPath}`] : []),
    auth,
  ].join('\n');
  await writeFile(path.join(dir, 'config.yml'), config);
  const argv = [REGISTRY_BIN, 'serve', path.join(dir, 'config.yml')];
  if (opts.cpus) argv.unshift('taskset', '-c', opts.cpus);
  if (opts.nice !== undefined) argv.unshift('nice', '-n', String(opts.nice));
  const child: ChildProcess = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr = (stderr + d).slice(-4000)));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(t);
    }
    await removeTempDir(dir);
  };
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) {
      await stop();
      throw new Error(`docker-registry exited early: ${stderr}`);
    }
    const up = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (up) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`docker-registry did not listen on ${port}: ${stderr}`);
    }
    await sleep(50);
  }
  const host = `127.0.0.1:${port}`;
  return { host, port, url: `${opts.tls ? 'https' : 'http'}://${host}`, dir, stop };
}

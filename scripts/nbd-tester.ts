/**
 * Runs the reference NBD test suite's client (nbd-tester-client, built by
 * scripts/nbd-tester.sh) against `obd serve`, case by case as the suite's tests/run/simple_test
 * runs it against nbd-server: the same client flags, trace files and certificates, with an
 * empty 50 MiB writable image in place of nbd-server's temporary file.
 *
 *   bash scripts/nbd-tester.sh                         # build once (needs the network)
 *   node scripts/nbd-tester.ts                         # every case, a table on stdout
 *   node scripts/nbd-tester.ts tls tlshuge integrityhuge
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const OBD = path.join(ROOT, 'src', 'cli', 'main.ts');
export const TESTER_COMMIT = '89ba7b5379548d6ebbfa36db15f2b8e3787a09ea';

/** Where scripts/nbd-tester.sh puts the build (the same rule as the script). */
export function testerDir(): string {
  const cache = process.env.OBD_CACHE ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'obd');
  return path.join(cache, `nbd-tester-${TESTER_COMMIT.slice(0, 12)}`);
}

export function testerBuilt(): boolean {
  return existsSync(path.join(testerDir(), 'tests', 'run', 'nbd-tester-client'));
}

interface Case {
  /** Client flags before the host (paths relative to tests/run; CERTS is tests/run/certs). */
  client: string[];
  /** Extra `obd serve` flags; the main export is writable unless readOnly. */
  serve?: string[];
  readOnly?: boolean;
  tls?: boolean;
  unix?: boolean;
  /** Host arguments instead of 127.0.0.1 (tlshuge connects to 127.0.0.1 naming localhost). */
  host?: string;
}

/** The simple_test cases that need only a server (no nbd-client, netlink mock or inetd). */
export const CASES: Record<string, Case> = {
  cfg1: { client: ['-N', 'export1'] },
  cfgsize: { client: ['-o', '-N', 'export1'] },
  write: { client: ['-N', 'export1', '-w'] },
  flush: { client: ['-N', 'export1', '-w', '-f'] },
  integrity: { client: ['-N', 'export1', '-i', '-t', 'integrity-test.tr'] },
  integrityhuge: { client: ['-N', 'export1', '-i', '-t', 'integrityhuge-test.tr'] },
  handshake: { client: ['-h', '-N', 'export1'] },
  unix: { client: ['-N', 'export1'], unix: true },
  rowrite: { client: ['-N', 'export1', '-w', '-F'], readOnly: true },
  tls: { client: ['-N', 'export1', '-i', '-t', 'integrity-test.tr', '-C', 'CERTS/client-cert.pem', '-K', 'CERTS/client-key.pem', '-A', 'CERTS/ca-cert.pem'], tls: true, host: 'localhost' },
  tlshuge: { client: ['-N', 'export1', '-i', '-t', 'integrityhuge-test.tr', '-C', 'CERTS/client-cert.pem', '-K', 'CERTS/client-key.pem', '-A', 'CERTS/ca-cert.pem', '-H', 'localhost'], tls: true },
  tlswrongcert: { client: ['-N', 'export1', '-t', 'integrity-test.tr', '-C', 'CERTS/selfsigned-cert.pem', '-K', 'CERTS/selfsigned-key.pem', '-F'], tls: true, host: 'localhost' },
};

export interface CaseResult {
  name: string;
  ok: boolean;
  seconds: number;
  /** The client's last lines, and the server's stderr when it failed. */
  output: string;
}

function obdSync(args: string[]): void {
  const r = spawnSync(process.execPath, [OBD, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`obd ${args.join(' ')}: ${r.stderr}`);
}

/** One case: a fresh 50 MiB image, `obd serve` on it, the tester client, the server stopped. */
export async function runCase(name: string): Promise<CaseResult> {
  const c = CASES[name];
  if (!c) throw new Error(`no case "${name}"; cases: ${Object.keys(CASES).join(', ')}`);
  const run = path.join(testerDir(), 'tests', 'run');
  const certs = path.join(run, 'certs');
  const dir = await mkdtemp(path.join(os.tmpdir(), 'obd-nbdtester-'));
  const t0 = performance.now();
  try {
    const raw = path.join(dir, 'zero.raw');
    await writeFile(raw, '');
    await truncate(raw, 50 * 1024 * 1024);
    obdSync(['import', raw, path.join(dir, 'base.lsmt')]);
    obdSync(['create', path.join(dir, 'rw.data'), path.join(dir, 'rw.index'), '--base', path.join(dir, 'base.lsmt')]);
    const sock = path.join(dir, 'nbd.sock');
    const args = [
      'serve', path.join(dir, 'base.lsmt'), '--export', 'export1', '--json',
      ...(c.readOnly ? [] : ['--writable', '--upper', path.join(dir, 'rw.data'), path.join(dir, 'rw.index')]),
      ...(c.unix ? ['--socket', sock] : ['--listen', '127.0.0.1:0']),
      ...(c.tls ? ['--tls', 'require', '--tls-certificates', certs, '--tls-verify-peer'] : c.unix || c.readOnly ? [] : ['--allow-insecure-writes']),
      ...(c.serve ?? []),
    ];
    const server = spawn(process.execPath, [OBD, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let serverErr = '';
    server.stderr.on('data', (d) => (serverErr += d));
    const exited = new Promise<number | null>((r) => server.on('exit', (code) => r(code)));
    try {
      const ready = await new Promise<{ port?: number }>((resolve, reject) => {
        const lines = createInterface({ input: server.stdout });
        lines.once('line', (l) => resolve(JSON.parse(l)));
        void exited.then((code) => reject(new Error(`obd serve exited ${code}: ${serverErr}`)));
      });
      const where = c.unix ? ['-u', sock] : [c.host ?? '127.0.0.1', String(ready.port)];
      const clientArgs = [...c.client.map((a) => a.replace(/^CERTS\//, `${certs}/`)), ...where];
      const client = spawnSync(path.join(run, 'nbd-tester-client'), clientArgs, { cwd: run, encoding: 'utf8', timeout: 300_000, maxBuffer: 1 << 30 });
      // The client redraws a request counter with \r: keep only the lines it ends with.
      const out = `${client.stdout}\n${client.stderr}`.split(/[\r\n]+/).map((l) => l.trim()).filter((l) => l && !/Requests: \d+$/.test(l)).slice(-8).join('\n');
      const ok = client.status === 0;
      return { name, ok, seconds: (performance.now() - t0) / 1000, output: ok ? out : `${out}\n--- obd serve:\n${serverErr.trim().split('\n').slice(-10).join('\n')}` };
    } finally {
      server.kill('SIGTERM');
      await exited;
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function main(argv: string[]): Promise<number> {
  if (!testerBuilt()) {
    process.stderr.write(`nbd-tester-client is not built in ${testerDir()}: run bash scripts/nbd-tester.sh\n`);
    return 2;
  }
  const names = argv.length ? argv : Object.keys(CASES);
  const rows: CaseResult[] = [];
  for (const n of names) {
    const r = await runCase(n);
    rows.push(r);
    process.stderr.write(`${r.ok ? 'PASS' : 'FAIL'} ${n} (${r.seconds.toFixed(1)} s)\n${r.ok ? '' : r.output + '\n'}`);
  }
  process.stdout.write(`| case | result | time |\n|---|---|---|\n${rows.map((r) => `| ${r.name} | ${r.ok ? 'pass' : 'FAIL'} | ${r.seconds.toFixed(1)} s |`).join('\n')}\n`);
  return rows.every((r) => r.ok) ? 0 : 1;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = await main(process.argv.slice(2));
}

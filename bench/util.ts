/** Small shared helpers for the benchmarks: a seeded RNG, medians, Markdown tables, results files. */
import { execFile, execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** xorshift32: fixed seeds give the same layouts on every run. */
export class Rng {
  #s: number;
  constructor(seed: number) {
    this.#s = (seed ^ 0x9e3779b9) >>> 0 || 1;
  }
  next(): number {
    let x = this.#s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#s = x >>> 0;
    return this.#s / 2 ** 32;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function table(head: string[], rows: string[][]): string {
  return [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

const RESULTS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'results');

/** Writes bench/results/<name>.md with a header naming the machine and date, and echoes it. */
export async function writeResults(name: string, markdown: string): Promise<void> {
  await mkdir(RESULTS, { recursive: true });
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  const stamp = `_Measured ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC on ${os.cpus().length} × ${cpu}, Node ${process.version}._\n\n`;
  const text = markdown.replace(/\n/, `\n\n${stamp}`);
  await writeFile(path.join(RESULTS, `${name}.md`), text);
  process.stdout.write(text + '\n');
}

/** Runs a command to completion; resolves its stdout, rejects with its stderr. */
export function sh(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { maxBuffer: 1 << 26 }, (e, out, err) => (e ? reject(new Error(`${cmd} ${args.slice(0, 4).join(' ')}…: ${err || e.message}`)) : resolve(out))),
  );
}

/**
 * How a user runs `launcher ARGS`: through this Node with the Node options of the launcher's
 * shebang (`#!/usr/bin/env -S node OPTIONS`, what its `env` would exec, minus env itself),
 * then `nodeFlags`. Main.ts entries (old checkouts) have no shebang options.
 */
export function obdCommand(launcher: string, args: string[], nodeFlags: string[] = []): [string, string[]] {
  ensureFreshBundle(launcher);
  return [process.execPath, [...shebangFlags(launcher), ...nodeFlags, launcher, ...args]];
}

const checkedBundles = new Set<string>();

/**
 * Builds the CLI bundle of the launcher's checkout when any of its bundles is stale or missing:
 * the launcher would silently run the sources instead, and a benchmark would time what users
 * (after `npm ci`) never run. Checkouts from before the bundle have no build script: left alone.
 */
function ensureFreshBundle(launcher: string): void {
  const root = path.resolve(path.dirname(launcher), '..', '..');
  const build = path.join(root, 'scripts', 'build-cli.ts');
  if (checkedBundles.has(root) || !existsSync(build)) return;
  checkedBundles.add(root);
  const { freshBundle } = createRequire(import.meta.url)(path.join(root, 'src', 'runtime', 'bundle.cjs')) as { freshBundle: (o: { name: string }) => unknown };
  let names: string[] = [];
  try {
    names = Object.keys(JSON.parse(readFileSync(path.join(root, 'dist', 'cli', 'manifest.json'), 'utf8')).bundles ?? {});
  } catch {
    // No manifest: build.
  }
  if (names.length > 0 && names.every((name) => freshBundle({ name }))) return;
  process.stderr.write(`bench: building the CLI bundle of ${root} (stale or missing)\n`);
  execFileSync(process.execPath, [build], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
}

function shebangFlags(file: string): string[] {
  const first = readFileSync(file, 'utf8').split('\n', 1)[0]!;
  const m = /^#!\S*env -S node((?: \S+)*)\s*$/.exec(first);
  return m ? m[1]!.split(' ').filter(Boolean) : [];
}

/**
 * Spawns a server that prints JSON lines (`obd serve --json`) and resolves once its `ready`
 * line is out; rejects with the tail of its stderr if it exits first.
 */
export async function spawnReady(cmd: string, args: string[]): Promise<ChildProcess> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d) => (err = (err + d).slice(-4000)));
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += d;
      if (out.includes('"ready"')) resolve();
    });
    child.once('exit', (c) => reject(new Error(`the server exited (${c}): ${err}`)));
  });
  return child;
}

/** SIGTERM, then resolves once the process is gone. */
export async function stopChild(child: ChildProcess): Promise<void> {
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

export interface Timing {
  wall: number;
  cpu: number;
}

/**
 * Runs a command to completion: wall ms (our clock) and CPU ms, user + system (from
 * /usr/bin/time, 10 ms steps); with `capture`, its stdout too.
 */
export function run(cmd: string, argv: string[], capture = false): Timing & { stdout: string } {
  const t0 = performance.now();
  const r = spawnSync('/usr/bin/time', ['-f', '@@ %e %U %S', cmd, ...argv], { stdio: ['ignore', capture ? 'pipe' : 'ignore', 'pipe'], encoding: 'utf8', maxBuffer: 1 << 28 });
  const wall = performance.now() - t0;
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(' ')} failed (${r.status}): ${r.stderr.slice(-4000)}`);
  const m = /@@ [\d.]+ ([\d.]+) ([\d.]+)\s*$/.exec(r.stderr);
  if (!m) throw new Error(`no timing from ${cmd}: ${r.stderr.slice(-4000)}`);
  return { wall, cpu: (Number(m[1]) + Number(m[2])) * 1000, stdout: r.stdout ?? '' };
}

/**
 * A service config (/etc/overlaybd/overlaybd.json's shape) for running the reference tools
 * offline in `dir`: a file cache there, no credentials, no download, P2P, exporter or
 * service. Resolves the config's path.
 */
export async function referenceServiceConfig(dir: string): Promise<string> {
  const at = (name: string): string => path.join(dir, name);
  await mkdir(at('ref-cache'), { recursive: true });
  await writeFile(at('cred.json'), '{"auths":{}}');
  const svc = {
    logConfig: { logLevel: 1, logPath: at('ref.log') },
    cacheConfig: { cacheType: 'file', cacheDir: at('ref-cache'), cacheSizeGB: 1 },
    gzipCacheConfig: { enable: false },
    credentialConfig: { mode: 'file', path: at('cred.json') },
    ioEngine: 0,
    download: { enable: false },
    p2pConfig: { enable: false },
    exporterConfig: { enable: false },
    enableAudit: false,
    serviceConfig: { enable: false },
  };
  await writeFile(at('svc.json'), JSON.stringify(svc));
  return at('svc.json');
}

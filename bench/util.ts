/** Small shared helpers for the benchmarks: a seeded RNG, medians, Markdown tables, results files. */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
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

/** Running the `obd` CLI as a child process, the way users do. */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFile, readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeTempDir, removeTempDir } from './temp.ts';

export const MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.ts');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function obd(args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<CliResult> {
  return collect(process.execPath, [MAIN, ...args], { env: opts.env, input: opts.input ?? '' });
}

/**
 * Runs a process to its end and collects its output. With `input` it is written to stdin
 * (a command may exit without reading it: EPIPE is then expected); without, stdin is closed.
 */
export function collect(command: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; input?: string } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: { ...process.env, ...opts.env }, cwd: opts.cwd, stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    if (opts.input !== undefined) {
      child.stdin!.on('error', (e: NodeJS.ErrnoException) => {
        if (e.code !== 'EPIPE') reject(e);
      });
      child.stdin!.end(opts.input);
    }
  });
}

export interface ServeHandle {
  /** The JSON lines printed so far (the first is `ready`). */
  events: Record<string, unknown>[];
  ready: { exports: { uri: string }[]; host?: string; port?: number; socket?: string };
  readonly pid: number;
  /** What the server wrote on stderr so far. */
  stderr(): string;
  /** SIGTERM, then the exit code once it is gone. */
  stop(): Promise<number | null>;
  /** The process, for other signals or closing its pipes; `exited` resolves its exit code. */
  child: ChildProcess;
  exited: Promise<number | null>;
}

/** Starts `obd serve --json ARGS` and resolves once its `ready` line is out. */
export function serveJson(args: string[]): Promise<ServeHandle> {
  const child = spawn(process.execPath, [MAIN, 'serve', '--json', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const events: Record<string, unknown>[] = [];
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
  return new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      out += d;
      for (let nl = out.indexOf('\n'); nl >= 0; nl = out.indexOf('\n')) {
        events.push(JSON.parse(out.slice(0, nl)));
        out = out.slice(nl + 1);
        if (events.length === 1 && events[0]!.event !== 'ready') reject(new Error(`obd serve: ${JSON.stringify(events[0])} ${err}`));
        else if (events.length === 1) {
          resolve({
            events,
            ready: events[0] as ServeHandle['ready'],
            pid: child.pid!,
            stderr: () => err,
            stop: async () => {
              child.kill('SIGTERM');
              return exited;
            },
            child,
            exited,
          });
        }
      }
    });
    exited.then((code) => reject(new Error(`obd serve exited (${code}) before it was ready: ${err}`)));
  });
}

/** Every file under `dir` with its sha256, to show that a command left its inputs alone. */
export async function treeDigest(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const p = path.join(e.parentPath, e.name);
    out[path.relative(dir, p)] = createHash('sha256').update(await readFile(p)).digest('hex');
  }
  return out;
}

export interface Workspace {
  dir: string;
  f: (name: string) => string;
  done: () => Promise<void>;
}

/** A fresh temp dir holding copies of files (new name → source path), so tests never write fixtures. */
export async function fixtureCopies(prefix: string, copies: Record<string, string>): Promise<Workspace> {
  const dir = await makeTempDir(prefix);
  const f = (n: string) => path.join(dir, n);
  for (const [name, from] of Object.entries(copies)) await copyFile(from, f(name));
  return { dir, f, done: () => removeTempDir(dir) };
}

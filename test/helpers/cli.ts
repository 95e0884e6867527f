/** Running the `obd` CLI as a child process, the way users do. */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.ts');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function obd(args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], { env: { ...process.env, ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(opts.input ?? '');
  });
}

export interface Serving {
  child: ChildProcess;
  /** The parsed ready line of `obd serve --json`. */
  ready: { socket?: string; exports: { name: string; uri: string; readOnly: boolean; layers: number; size: number }[] };
  exit: Promise<number | null>;
}

/** Starts `obd serve ARGS --json` and waits for its ready line; stop it with child.kill(). */
export async function startServe(args: string[], stderr: 'pipe' | 'ignore' = 'ignore'): Promise<Serving> {
  const child = spawn(process.execPath, [MAIN, 'serve', ...args, '--json'], { stdio: ['ignore', 'pipe', stderr] });
  const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', resolve);
    void exit.then((code) => reject(new Error(`obd serve ${args.join(' ')} exited ${code}`)));
  });
  return { child, ready: JSON.parse(line), exit };
}

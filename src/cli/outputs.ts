/**
 * The one rule every writing command follows before it writes anything: an output that exists
 * is refused unless --force is given, and an output that is one of the command's inputs (same
 * path, or the same file through a symlink or a hard link) is refused even with --force.
 * Temporary outputs are removed when the command is stopped by SIGINT or SIGTERM.
 */
import { rmSync } from 'node:fs';
import path from 'node:path';
import { InvalidArgumentError } from '../io/errors.ts';
import { realpathAsync, statAsync } from '../io/fs-async.ts';

/** An output was refused: it exists (without --force) or it is one of the inputs. */
export class RefusedOutputError extends InvalidArgumentError {}

/** A command-line argument naming a file: what the user typed and which argument it is. */
export interface NamedPath {
  path: string;
  /** How the help names the argument, e.g. `<out>` or `layer 2`. */
  arg: string;
}

/** The -f/--force option of every writing command: `.option(...FORCE)`. */
export const FORCE = ['-f, --force', 'replace an output that already exists (never one of the inputs)'] as const;

/** Names the positional arguments of a list, e.g. layers 1..n. */
export function argList(paths: readonly string[], arg: string): NamedPath[] {
  return paths.map((p, i) => ({ path: p, arg: paths.length === 1 ? arg : `${arg} ${i + 1}` }));
}

interface Identity {
  /** Absolute path with symlinks resolved (of the parent directory when the file is missing). */
  real: string;
  /** dev:ino of an existing file, which also matches a hard link under another name. */
  inode: string | undefined;
}

async function identity(p: string): Promise<Identity> {
  const abs = path.resolve(p);
  const st = await statAsync(abs).catch(() => undefined);
  let real: string;
  try {
    real = await realpathAsync(abs);
  } catch {
    // Missing (or a dangling symlink): its directory may still be a symlink to an input's.
    real = await realpathAsync(path.dirname(abs)).then((d) => path.join(d, path.basename(abs)), () => abs);
  }
  return { real, inode: st ? `${st.dev}:${st.ino}` : undefined };
}

/**
 * Refuses, before anything is written, outputs that exist (unless `force`) and outputs that
 * are one of the `inputs` or another output (always). Inputs that are `-` (stdin) are skipped.
 */
export async function checkOutputs(outputs: readonly NamedPath[], inputs: readonly NamedPath[], force = false): Promise<void> {
  const ins = await Promise.all(inputs.filter((i) => i.path !== '-').map(async (i) => ({ ...i, id: await identity(i.path) })));
  const seen: (NamedPath & { id: Identity })[] = [];
  for (const o of outputs) {
    const id = await identity(o.path);
    const same = (x: { id: Identity }) => x.id.real === id.real || (id.inode !== undefined && x.id.inode === id.inode);
    const input = ins.find(same);
    if (input) {
      throw new RefusedOutputError(
        `${o.path}: the output ${o.arg} is the input ${input.arg}${input.path === o.path ? '' : ` (${input.path})`}; refusing to overwrite an input, even with --force`,
      );
    }
    const twice = seen.find(same);
    if (twice) throw new RefusedOutputError(`${o.path}: the output ${o.arg} is also the output ${twice.arg}`);
    seen.push({ ...o, id });
    if (id.inode !== undefined && !force) throw new RefusedOutputError(`${o.path}: the output ${o.arg} already exists (give --force to replace it)`);
  }
}

const temporaries = new Set<string>();
let handler: ((signal: NodeJS.Signals) => void) | undefined;

/**
 * Registers a temporary output to remove if SIGINT or SIGTERM stops the command; the returned
 * function unregisters it (once it is renamed into place or removed). While temporaries are
 * registered, those signals remove them and exit with 128 + the signal number.
 */
export function removeOnStop(tmp: string): () => void {
  temporaries.add(tmp);
  if (!handler) {
    handler = (signal) => {
      for (const t of temporaries) rmSync(t, { force: true, recursive: true });
      process.stderr.write(`obd: ${signal}: stopped; temporary output removed\n`);
      process.exit(signal === 'SIGINT' ? 130 : 143);
    };
    process.on('SIGINT', handler);
    process.on('SIGTERM', handler);
  }
  return () => {
    temporaries.delete(tmp);
    if (temporaries.size === 0 && handler) {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
      handler = undefined;
    }
  };
}

/**
 * node scripts/build-cli.ts [--out DIR]
 *
 * Bundles the `obd` CLI (src/cli/program.ts and everything it imports, commander included)
 * and the worker-thread entries into DIR (default dist/cli), which the launcher src/cli/obd.js
 * and the workers' entries run instead of the sources while the bundle is fresh (see
 * src/runtime/bundle.js). Run by `npm ci` and `npm install` (the `prepare` script) and by
 * hand; a stale bundle is never used, so forgetting to rebuild costs only speed.
 *
 * Why: loaded as ES modules, commander and our sources make Node build an ES-module facade for
 * every builtin they import and pay its loader per module; one CommonJS file requires them
 * plainly and starts ~25 ms sooner (`obd --help` 98 vs 124 ms of CPU, `info` 99 vs 119; ESM
 * with code splitting, a chunk per area and lazy import, measured no faster than the sources).
 * Lazily imported modules stay lazy in the bundle: their code runs only when imported.
 */
import type { Plugin } from 'esbuild';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const SELF = fileURLToPath(import.meta.url);
const SRC = path.join(ROOT, 'src') + path.sep;

/** Entry points: each becomes DIR/NAME.cjs, exporting what its source exports. */
const ENTRIES = {
  program: 'src/cli/program.ts',
  'compress-worker': 'src/zfile/compress-worker.ts',
  'background-worker': 'src/live/background-worker.ts',
};

/** Packages bundled: commander is the one whose loading costs start-up; the rest (native addons among them) load from node_modules as today. */
const BUNDLED = new Set(['commander']);

export const MANIFEST = 'manifest.json';

/**
 * Keeps every package but commander external, and makes every `import.meta.url` (and
 * dirname, filename) of a source name that source, not the bundle: workers, addons loaded
 * through createRequire and mount's `./obd.js` are found from it.
 */
const sourcePaths: Plugin = {
  name: 'source-paths',
  setup(b) {
    b.onResolve({ filter: /^[^./]/ }, (args) => {
      if (args.kind === 'entry-point' || path.isAbsolute(args.path) || args.path.startsWith('node:')) return undefined;
      const name = args.path.split('/').slice(0, args.path.startsWith('@') ? 2 : 1).join('/');
      return BUNDLED.has(name) ? undefined : { path: args.path, external: true };
    });
    b.onLoad({ filter: /\.[cm]?[jt]s$/ }, async (args) => {
      if (!args.path.startsWith(SRC)) return undefined;
      const contents = (await readFile(args.path, 'utf8'))
        .replaceAll('import.meta.url', JSON.stringify(pathToFileURL(args.path).href))
        .replaceAll('import.meta.filename', JSON.stringify(args.path))
        .replaceAll('import.meta.dirname', JSON.stringify(path.dirname(args.path)));
      return { contents, loader: args.path.endsWith('.ts') ? 'ts' : 'js' };
    });
  },
};

export interface BuiltCli {
  dir: string;
  /** Files the bundle was built from: the manifest's inputs. */
  inputs: number;
  bytes: number;
}

/**
 * Builds the bundle into `out`, replaced whole (built beside it, then renamed into place, so
 * a concurrent `obd` finds the old bundle, the new one or none), with a manifest of its
 * inputs' sizes and times that src/runtime/bundle.js checks.
 */
export async function buildCli(out = path.join(ROOT, 'dist', 'cli')): Promise<BuiltCli> {
  const { build } = await import('esbuild');
  const tmp = `${out}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(path.dirname(out), { recursive: true });
  const result = await build({
    entryPoints: Object.fromEntries(Object.entries(ENTRIES).map(([name, file]) => [name, path.join(ROOT, file)])),
    outdir: tmp,
    // The metafile names inputs relative to this; they are resolved against ROOT below.
    absWorkingDir: ROOT,
    bundle: true,
    format: 'cjs',
    platform: 'node',
    target: `node${process.versions.node.split('.')[0]}`,
    outExtension: { '.js': '.cjs' },
    metafile: true,
    logLevel: 'warning',
    legalComments: 'none',
    plugins: [sourcePaths],
  });
  // The build script is an input too: a change to how the bundle is made makes it stale.
  const files = [...new Set([...Object.keys(result.metafile.inputs).map((f) => path.resolve(ROOT, f)), SELF])].sort();
  const inputs: [file: string, size: number, mtimeMs: number, ctimeMs: number][] = [];
  for (const file of files) {
    const st = await stat(file);
    inputs.push([path.relative(ROOT, file), st.size, st.mtimeMs, st.ctimeMs]);
  }
  // `id` names this build's code caches (src/runtime/bundle.js): V8 checks a cache against its
  // source's length only, so a cache must never outlive the build it was made from.
  const id = `${Date.now().toString(36)}-${randomBytes(6).toString('hex')}`;
  await writeFile(path.join(tmp, MANIFEST), JSON.stringify({ node: process.version, root: ROOT, id, inputs }));
  const old = `${out}.old-${process.pid}`;
  await rename(out, old).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== 'ENOENT') throw e;
  });
  await rename(tmp, out);
  await rm(old, { recursive: true, force: true });
  const bytes = Object.values(result.metafile.outputs).reduce((n, o) => n + o.bytes, 0);
  return { dir: out, inputs: inputs.length, bytes };
}

if (process.argv[1] && path.resolve(process.argv[1]) === SELF) {
  const { values } = parseArgs({ options: { out: { type: 'string' } } });
  try {
    const built = await buildCli(values.out && path.resolve(values.out));
    console.log(`obd bundle: ${built.dir} (${built.inputs} inputs, ${(built.bytes / 1024).toFixed(0)} KiB)`);
  } catch (e) {
    // An install without devDependencies (npm ci --omit=dev) still works: obd runs the sources.
    if ((e as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND' || !String((e as Error).message).includes("'esbuild'")) throw e;
    console.log('obd bundle: not built (esbuild is not installed); obd runs from the sources');
  }
}

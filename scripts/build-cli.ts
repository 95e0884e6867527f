/**
 * node scripts/build-cli.ts [--out DIR]
 *
 * Bundles the `obd` CLI (src/cli/program.ts and everything it imports, commander included),
 * once whole and once per command area, and the worker-thread entries into DIR (default
 * dist/cli), which the launcher src/cli/obd.js and the workers' entries run instead of the
 * sources while the bundle is fresh (see src/runtime/bundle.cjs). Run by `npm ci` and
 * `npm install` (the `prepare` script) and by hand; a stale bundle is never used, so
 * forgetting to rebuild costs only speed.
 *
 * Why: loaded as ES modules, commander and our sources make Node build an ES-module facade for
 * every builtin they import and pay its loader per module; one CommonJS file requires them
 * plainly and starts ~25 ms sooner (`obd --help` 98 vs 124 ms of CPU, `info` 99 vs 119; ESM
 * with code splitting, a chunk per area and lazy import, measured no faster than the sources).
 * Lazily imported modules stay lazy in the bundle: their code runs only when imported.
 */
import type { BuildOptions, Metafile, Plugin } from 'esbuild';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { AREAS } from '../src/cli/areas.ts';

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
      if (args.namespace !== 'file' || !args.path.startsWith(SRC)) return undefined;
      const contents = (await readFile(args.path, 'utf8'))
        .replaceAll('import.meta.url', JSON.stringify(pathToFileURL(args.path).href))
        .replaceAll('import.meta.filename', JSON.stringify(args.path))
        .replaceAll('import.meta.dirname', JSON.stringify(path.dirname(args.path)));
      return { contents, loader: args.path.endsWith('.ts') ? 'ts' : 'js' };
    });
  },
};

/**
 * Commander requires node:child_process when loaded, for subcommands that are executables of
 * their own (which obd has none of): ~3.5 ms of CPU per run for node:child_process, node:net,
 * node:dgram and their internals. In the bundle commander gets a stand-in whose spawn()
 * requires the module on its first call. The build fails if commander uses any other member.
 */
const LAZY = 'obd-lazy-child-process';
const lazyChildProcess: Plugin = {
  name: 'lazy-child-process',
  setup(b) {
    const commander = `${path.sep}node_modules${path.sep}commander${path.sep}`;
    b.onResolve({ filter: /^(node:)?child_process$/ }, (args) => (args.importer.includes(commander) ? { path: 'child_process', namespace: LAZY } : undefined));
    b.onLoad({ filter: /.*/, namespace: LAZY }, () => ({
      contents: "let cp;\nexport default { spawn: (...args) => (cp ??= require('node:child_process')).spawn(...args) };\n",
      loader: 'js',
    }));
    b.onLoad({ filter: /[\\/]node_modules[\\/]commander[\\/].*\.js$/ }, async (args) => {
      const contents = await readFile(args.path, 'utf8');
      const uses = contents.match(/\bchildProcess\.\w+/g) ?? [];
      const other = uses.find((u) => u !== 'childProcess.spawn');
      if (other) throw new Error(`${args.path}: commander uses ${other}, which the lazy node:child_process of scripts/build-cli.ts does not provide (only spawn)`);
      return { contents, loader: 'js' };
    });
  },
};

/**
 * One bundle per command area as well: program.ts with only that area's module, the other
 * areas' dynamic imports in src/cli/areas.ts replaced by a stub. The launcher runs it for the
 * area's commands, as program.ts would load only that area anyway: a seventh to two thirds of
 * the whole to read, and a smaller code cache to deserialize (area-layers.cjs, for `obd info`
 * and `export`: 504 of 1065 KB; reading it and `new vm.Script` with its cache take ~2 and ~4
 * ms of CPU, against ~4.5 and ~6 for the whole program).
 */
const AREAS_FILE = path.join(ROOT, 'src', 'cli', 'areas.ts');
const STUB = 'obd-area-stub';

/** Each area's bundle name (area-MODULE) and module path, from the module its loader imports. */
function areaBundles(): { name: string; module: string; commands: string[] }[] {
  return AREAS.map(([commands, load]) => {
    // The loader is `() => import('./x.ts')`: esbuild needs the literal, so it is read from there.
    const spec = /import\((['"])(\.\/[^'"]+)\1\)/.exec(String(load))?.[2];
    if (!spec) throw new Error(`${AREAS_FILE}: the loader of the area of ${commands.join(', ')} imports no ./module literally: ${String(load)}`);
    return { name: `area-${path.basename(spec).replace(/\.[cm]?[jt]s$/, '')}`, module: path.join(path.dirname(AREAS_FILE), spec), commands };
  });
}

/** Replaces every area module areas.ts imports but `keep` by a module whose register() throws. */
function onlyArea(keep: string): Plugin {
  return {
    name: 'only-area',
    setup(b) {
      b.onResolve({ filter: /^\./ }, (args) => {
        if (args.importer !== AREAS_FILE || args.kind !== 'dynamic-import') return undefined;
        const file = path.join(path.dirname(args.importer), args.path);
        return file === keep ? undefined : { path: file, namespace: STUB };
      });
      b.onLoad({ filter: /.*/, namespace: STUB }, (args) => ({
        // Unreachable while the launcher picks this bundle only for the kept area's commands.
        contents: `export function register() { throw new Error(${JSON.stringify(`obd: this bundle holds the area ${path.relative(ROOT, keep)} only, not ${path.relative(ROOT, args.path)}`)}); }`,
        loader: 'js',
      }));
    },
  };
}

/** The files an entry's bundle holds: everything reachable from it in the build's import graph. */
function reachable(meta: Metafile, entry: string): string[] {
  const seen = new Set<string>();
  const visit = (file: string) => {
    if (seen.has(file) || !meta.inputs[file]) return;
    seen.add(file);
    // A module of the plugins above (its path prefixed by its namespace) is no file.
    for (const i of meta.inputs[file].imports) if (!i.external && ![STUB, LAZY].some((ns) => i.path.startsWith(`${ns}:`))) visit(i.path);
  };
  visit(entry);
  return [...seen];
}

export interface BuiltCli {
  dir: string;
  /** Files the bundles were built from: the manifest's inputs. */
  inputs: number;
  bytes: number;
  /** Output files, by bundle name. */
  bundles: string[];
}

/**
 * Builds the bundles into `out`, replaced whole (built beside it, then renamed into place, so
 * a concurrent `obd` finds the old bundle, the new one or none), with a manifest of their
 * inputs' sizes and times that src/runtime/bundle.cjs checks, which inputs each bundle holds
 * and which command runs from which area bundle.
 */
export async function buildCli(out = path.join(ROOT, 'dist', 'cli')): Promise<BuiltCli> {
  const { build } = await import('esbuild');
  const tmp = `${out}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(path.dirname(out), { recursive: true });
  const options = {
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
    // No comments nor indentation: a third less to read and compile, and ASCII only (comments
    // held non-ASCII text), so V8 keeps the source as a one-byte string: `new vm.Script` of
    // area-layers.cjs with its code cache 4.2 → 2.2 ms of CPU, reading it 2.1 → 0.9 ms.
    minifyWhitespace: true,
  } satisfies BuildOptions;
  const areas = areaBundles();
  const builds = await Promise.all([
    build({ ...options, entryPoints: Object.fromEntries(Object.entries(ENTRIES).map(([name, file]) => [name, path.join(ROOT, file)])), plugins: [lazyChildProcess, sourcePaths] }),
    ...areas.map((a) => build({ ...options, entryPoints: { [a.name]: path.join(ROOT, ENTRIES.program) }, plugins: [onlyArea(a.module), lazyChildProcess, sourcePaths] })),
  ]);
  // Each bundle's inputs, as absolute paths; the build script is an input of every bundle too:
  // a change to how they are made makes them stale.
  const held = new Map<string, string[]>();
  for (const result of builds) {
    for (const [file, o] of Object.entries(result.metafile.outputs)) {
      if (!o.entryPoint) continue;
      const name = path.basename(file, '.cjs');
      held.set(name, [...reachable(result.metafile, o.entryPoint).map((f) => path.resolve(ROOT, f)), SELF]);
    }
  }
  const files = [...new Set([...held.values()].flat())].sort();
  const inputs: [file: string, size: number, mtimeMs: number, ctimeMs: number][] = [];
  for (const file of files) {
    const st = await stat(file);
    inputs.push([path.relative(ROOT, file), st.size, st.mtimeMs, st.ctimeMs]);
  }
  const index = new Map(files.map((f, i) => [f, i]));
  const bundles = Object.fromEntries([...held].sort(([a], [b]) => a.localeCompare(b)).map(([name, fs]) => [name, fs.map((f) => index.get(f)!).sort((a, b) => a - b)]));
  const commands = Object.fromEntries(areas.flatMap((a) => a.commands.map((c) => [c, a.name])));
  // `id` names this build's code caches (src/runtime/bundle.cjs): V8 checks a cache against its
  // source's length only, so a cache must never outlive the build it was made from.
  const id = `${Date.now().toString(36)}-${randomBytes(6).toString('hex')}`;
  await writeFile(path.join(tmp, MANIFEST), JSON.stringify({ node: process.version, root: ROOT, id, inputs, bundles, commands }));
  const old = `${out}.old-${process.pid}`;
  await rename(out, old).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== 'ENOENT') throw e;
  });
  await rename(tmp, out);
  await rm(old, { recursive: true, force: true });
  const bytes = builds.reduce((n, r) => n + Object.values(r.metafile.outputs).reduce((m, o) => m + o.bytes, 0), 0);
  return { dir: out, inputs: inputs.length, bytes, bundles: Object.keys(bundles) };
}

if (process.argv[1] && path.resolve(process.argv[1]) === SELF) {
  const { values } = parseArgs({ options: { out: { type: 'string' } } });
  try {
    const built = await buildCli(values.out && path.resolve(values.out));
    console.log(`obd bundle: ${built.dir} (${built.bundles.length} bundles, ${built.inputs} inputs, ${(built.bytes / 1024).toFixed(0)} KiB)`);
  } catch (e) {
    // An install without devDependencies (npm ci --omit=dev) still works: obd runs the sources.
    if ((e as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND' || !String((e as Error).message).includes("'esbuild'")) throw e;
    console.log('obd bundle: not built (esbuild is not installed); obd runs from the sources');
  }
}

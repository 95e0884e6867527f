/**
 * Start-up of the installed `obd` command (src/cli/obd.js), run from the sources and from the
 * bundle of scripts/build-cli.ts: every command still loads and prints the help it prints with
 * all areas registered, `--help` and a local command load only what they use, a real command
 * gives the same output either way, a bundle older than a source it holds is never run, and
 * the strip cache never serves the old text of a changed source.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cp, readdir, readFile, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Command } from 'commander';
import { buildCli } from '../../scripts/build-cli.ts';
import { AREAS } from '../../src/cli/areas.ts';
import { collect, MAIN, type CliResult } from '../helpers/cli.ts';
import { suiteTempDir, tempDir } from '../helpers/temp.ts';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const LAUNCHER = path.join(ROOT, 'src', 'cli', 'obd.js');
const FIXTURE = path.join(ROOT, 'test', 'fixtures', 'lsmt', 'layer1.lz4bs4.zfile');

function run(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return collect(process.execPath, args, { env });
}

// One bundle for the file, built from this tree into a temp dir (dist/cli may be absent or
// stale); the sources run with OBD_BUNDLE_DIR naming a directory that holds none.
// (Built on first use: the directory is made by a hook that may not have run before ours.)
const work = suiteTempDir('obd-bundle-');
let built: Promise<unknown> | undefined;
/** That bundle's directory, built on first call. */
async function fileBundle(): Promise<string> {
  const dir = path.join(work.path, 'cli');
  await (built ??= buildCli(dir));
  return dir;
}

/** npm gives every file it extracts this mtime (1985-10-26 08:15 UTC). */
const NPM_MTIME = 499162500;
const MODES = {
  sources: () => ({ OBD_BUNDLE_DIR: path.join(work.path, 'none') }),
  bundle: () => ({ OBD_BUNDLE_DIR: path.join(work.path, 'cli') }),
};
type Mode = keyof typeof MODES;

/** Checks that `mode` is what the launcher runs, as it says with OBD_DEBUG_BUNDLE. */
async function assertRuns(mode: Mode, env: NodeJS.ProcessEnv): Promise<void> {
  if (mode === 'bundle') await fileBundle();
  const r = await run([LAUNCHER, '--version'], { ...env, OBD_DEBUG_BUNDLE: '1' });
  assert.equal(r.code, 0, r.stderr);
  if (mode === 'bundle') assert.match(r.stderr, /^obd: running the bundle in /, `the bundle is fresh: ${JSON.stringify(env)}`);
  else assert.doesNotMatch(r.stderr, /running the bundle/);
}

/** Every command path (`zfile compress` as ['zfile', 'compress']) with its help, all areas registered in this process. */
async function expectedHelp(): Promise<Map<string, string>> {
  const program = new Command('obd');
  for (const [, load] of AREAS) (await load()).register(program);
  const out = new Map<string, string>();
  const walk = (cmd: Command, names: string[]) => {
    for (const sub of cmd.commands) {
      const p = [...names, sub.name()];
      // A child's stdout is a pipe: commander then wraps at 80 columns.
      let text = '';
      sub.configureOutput({ getOutHelpWidth: () => 80, writeOut: (s) => (text += s) });
      sub.outputHelp();
      out.set(p.join(' '), text);
      walk(sub, p);
    }
  };
  walk(program, []);
  return out;
}

for (const mode of Object.keys(MODES) as Mode[]) {
  test(`every command loads and prints the help it has with every area registered (${mode})`, async (t) => {
    const env = { ...MODES[mode](), XDG_CACHE_HOME: await tempDir(t, 'obd-startup-') };
    await assertRuns(mode, env);
    const expected = await expectedHelp();
    assert.ok(expected.size > 30, `only ${expected.size} commands found`);
    const top = await run([LAUNCHER, '--help'], env);
    assert.equal(top.code, 0, top.stderr);
    for (const name of [...expected.keys()].filter((n) => !n.includes(' '))) assert.match(top.stdout, new RegExp(`^  ${name}\\b`, 'm'), `obd --help lists ${name}`);
    const names = [...expected.keys()];
    // Four at a time: each is a whole process.
    for (let i = 0; i < names.length; i += 4) {
      await Promise.all(
        names.slice(i, i + 4).map(async (name) => {
          const r = await run([LAUNCHER, ...name.split(' '), '--help'], env);
          assert.equal(r.code, 0, `obd ${name} --help: ${r.stderr}`);
          assert.equal(r.stdout, expected.get(name), `obd ${name} --help`);
        }),
      );
    }
  });
}

/**
 * Runs the launcher (or, with `bare`, `node -e 0`) with a hook that prints, at
 * exit, the builtins and the files the process loaded and how many threads it has. With
 * `devNull`, stdout is /dev/null, where output thrown away goes.
 */
async function loaded(args: string[], env: NodeJS.ProcessEnv, { devNull = false, bare = false } = {}): Promise<{ builtins: string[]; files: string[]; threads: number }> {
  const probe = [
    "import module from 'node:module';",
    'const files = new Set();',
    "module.registerHooks({ resolve(s, c, next) { const r = next(s, c); if (r.url.startsWith('file:')) files.add(r.url); return r; } });",
    // The list first: process.stderr loads node:stream.
    "process.on('exit', () => { const threads = process.getBuiltinModule('node:fs').readdirSync('/proc/self/task').length; const seen = JSON.stringify({ builtins: process.moduleLoadList, files: [...files], threads }); process.stderr.write('\\n@@' + seen); });",
  ].join('\n');
  const node = ['--import', `data:text/javascript,${encodeURIComponent(probe)}`, ...(bare ? ['-e', '0'] : [LAUNCHER, ...args])];
  const r = devNull ? await collect('/bin/sh', ['-c', 'exec "$@" >/dev/null', 'sh', process.execPath, ...node], { env }) : await run(node, env);
  assert.equal(r.code, 0, r.stderr);
  const at = r.stderr.lastIndexOf('\n@@');
  assert.ok(at >= 0, r.stderr);
  const { builtins, files, threads } = JSON.parse(r.stderr.slice(at + 3)) as { builtins: string[]; files: string[]; threads: number };
  return { builtins, files: files.map((u) => fileURLToPath(u)), threads };
}

for (const mode of Object.keys(MODES) as Mode[]) {
  test(`--help and a local command load only what they use (${mode}, warm caches)`, async (t) => {
    const env = { ...MODES[mode](), XDG_CACHE_HOME: await tempDir(t, 'obd-startup-') };
    await assertRuns(mode, env);
    const dir = await tempDir(t, 'obd-startup-');
    const layer = path.join(dir, 'layer.lsmt');
    const raw = path.join(dir, 'disk.raw');
    await writeFile(raw, Buffer.alloc(1 << 20, 7));
    const made = await run([LAUNCHER, 'import', raw, layer], env);
    assert.equal(made.code, 0, made.stderr);
    // Node's own threads: V8's workers, no thread pool yet (it starts on the first async fs call).
    const { threads: nodeThreads } = await loaded([], env, { bare: true });
    for (const args of [['--help'], ['info', layer]]) {
      await run([LAUNCHER, ...args], env);
      const { builtins, files, threads } = await loaded(args, env);
      const label = `obd ${args.join(' ')} (${mode})`;
      // Opening, reading and closing a local layer is synchronous (FileSource, reads 'auto'):
      // starting the thread pool's threads costs ~3 ms of wall and 1-3 of CPU.
      assert.equal(threads, nodeThreads, `${label} runs ${threads} threads, node -e 0 ${nodeThreads}: it started the thread pool`);
      // node:https alone (node:tls, node:crypto) costs ~25 ms; the type stripper ~35 ms. In the
      // bundle every module's code is in one file, but a lazily imported one still runs, and
      // requires its builtins, only when imported: these say that it was not.
      // node:perf_hooks (~1.5 ms) is what the global `performance` loads on first use (src/io/clock.ts).
      // node:child_process (with node:net, node:dgram: ~3.5 ms) only from the bundle, where
      // commander's import of it is lazy (scripts/build-cli.ts).
      // node:fs/promises (~2.6 ms with readline, the REPL's history and fs watchers) is taken
      // on first use (src/io/builtins.ts) and FileSource works on the fd without it.
      const heavies = ['NativeModule tls', 'NativeModule crypto', 'NativeModule https', 'NativeModule http', 'NativeModule internal/deps/amaro/dist/index', 'NativeModule perf_hooks', 'NativeModule fs/promises', ...(mode === 'bundle' ? ['NativeModule child_process'] : [])];
      // From the bundle, a local command and help print through fd 1, without process.stdout
      // (writeOut in src/cli/common.ts), and nbd-tls.ts takes node:net only when serving: no
      // node:stream, nor node:net for this pipe.
      if (mode === 'bundle') heavies.push('NativeModule stream', 'NativeModule net');
      for (const heavy of heavies) {
        assert.ok(!builtins.includes(heavy), `${label} loads ${heavy}`);
      }
      const project = files.filter((f) => f.startsWith(ROOT + path.sep)).map((f) => path.relative(ROOT, f));
      if (mode === 'sources') {
        for (const f of project) assert.doesNotMatch(f, /^src\/(lsmt\/writable|zfile\/(reader|writer)|remote\/(http|registry)|live\/|io\/atomic)/, `${label} loads ${f}`);
        assert.ok(project.includes(path.join('src', 'cli', 'program.ts')), `${label}: the probe saw no project file`);
      } else {
        // Nothing from the sources but the launcher and its loader of the bundle (which runs
        // program.cjs through vm.Script, unseen by the hook), and no package: commander is in
        // the bundle, the others are needed by no local command's start.
        assert.deepEqual(project.sort(), [path.join('src', 'cli', 'obd.js'), path.join('src', 'runtime', 'bundle.cjs')], `${label} loads ${project.join(', ')}`);
        assert.deepEqual(files.filter((f) => !f.startsWith(ROOT + path.sep)), [], `${label} loads ${files.join(', ')}`);
      }
    }
    // A zfile layer: its reader and addons load, still without node:fs/promises or the pool.
    await run([LAUNCHER, 'info', FIXTURE], env);
    const zfile = await loaded(['info', FIXTURE], env);
    assert.ok(!zfile.builtins.includes('NativeModule fs/promises'), `obd info ZFILE (${mode}) loads node:fs/promises`);
    assert.equal(zfile.threads, nodeThreads, `obd info ZFILE (${mode}) runs ${zfile.threads} threads, node -e 0 ${nodeThreads}: it started the thread pool`);
    // export checks its output, writes it through a temp and commits it (io/fs-async.ts).
    const exported = await loaded(['export', FIXTURE, path.join(dir, 'disk.out'), '--force'], env);
    assert.ok(!exported.builtins.includes('NativeModule fs/promises'), `obd export ZFILE OUT (${mode}) loads node:fs/promises`);
  });
}

test('help and results thrown away to /dev/null load no node:stream (bundle)', async (t) => {
  const env = { ...MODES.bundle(), XDG_CACHE_HOME: await tempDir(t, 'obd-startup-') };
  await assertRuns('bundle', env);
  // /dev/null is a character device, as a terminal is, but no terminal: commander need not ask
  // process.stdout (node:stream, and node:net or node:tty) for its width.
  for (const args of [['--help'], ['serve', '--help'], ['info', FIXTURE]]) {
    await run([LAUNCHER, ...args], env);
    const { builtins } = await loaded(args, env, { devNull: true });
    for (const heavy of ['NativeModule stream', 'NativeModule net', 'NativeModule tty']) assert.ok(!builtins.includes(heavy), `obd ${args.join(' ')} > /dev/null loads ${heavy}`);
  }
});

test('info and export of a zfile layer give the same output from the bundle as from the sources', async (t) => {
  const dir = await tempDir(t, 'obd-startup-');
  const cache = await tempDir(t, 'obd-startup-');
  await assertRuns('bundle', MODES.bundle());
  const results: Record<string, { info: CliResult; export: CliResult; raw: Buffer }> = {};
  for (const mode of Object.keys(MODES) as Mode[]) {
    const env = { ...MODES[mode](), XDG_CACHE_HOME: cache };
    const out = path.join(dir, `${mode}.raw`);
    const info = await collect(process.execPath, [MAIN, 'info', '--json', FIXTURE], { env });
    const exported = await collect(process.execPath, [MAIN, 'export', FIXTURE, out], { env });
    exported.stdout = exported.stdout.replaceAll(out, 'OUT');
    results[mode] = { info, export: exported, raw: await readFile(out) };
  }
  const { sources, bundle } = results;
  assert.equal(sources.info.code, 0, sources.info.stderr);
  assert.equal(bundle.info.code, 0, bundle.info.stderr);
  assert.equal(bundle.info.stdout, sources.info.stdout);
  assert.equal(bundle.export.code, 0, bundle.export.stderr);
  assert.equal(bundle.export.stdout, sources.export.stdout);
  assert.equal(bundle.raw.length, 64 << 20);
  assert.ok(bundle.raw.equals(sources.raw), 'the exported disks differ');
});

test('the bundle\'s code caches: one per bundle, written by the first run of each command, replaced for a new build, a corrupt one rewritten', async (t) => {
  const out = path.join(await tempDir(t, 'obd-codecache-'), 'cli');
  await buildCli(out);
  const xdg = await tempDir(t, 'obd-startup-');
  const env = { OBD_BUNDLE_DIR: out, XDG_CACHE_HOME: xdg };
  const cacheDir = async () => {
    const [version] = await readdir(path.join(xdg, 'overlaybd-ts'));
    // One directory per source tree (this checkout's).
    const trees = await readdir(path.join(xdg, 'overlaybd-ts', version!, 'obd-bundle'));
    assert.equal(trees.length, 1, trees.join(', '));
    return path.join(xdg, 'overlaybd-ts', version!, 'obd-bundle', trees[0]!);
  };
  /** The files of the cache directory, and the code cache of bundle `name` (program, area-layers...). */
  const state = async (name: string) => {
    const dir = await cacheDir();
    const names = (await readdir(dir)).sort();
    const v8 = names.find((n) => n.startsWith(`${name}-`) && n.endsWith('.v8'))!;
    assert.ok(v8, `no code cache of ${name} in ${names.join(', ')}`);
    return { names, seen: JSON.parse(await readFile(path.join(dir, `${v8}.json`), 'utf8')) as string[], size: (await stat(path.join(dir, v8))).size, v8: path.join(dir, v8) };
  };
  const ok = async (args: string[]) => {
    const r = await run([LAUNCHER, ...args], env);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout;
  };
  const help = await ok(['--help']);
  const first = await state('program');
  assert.equal(first.names.length, 2, first.names.join(', '));
  assert.deepEqual(first.seen, ['']);
  assert.equal(await ok(['--help']), help);
  assert.deepEqual((await state('program')).seen, [''], 'a command seen before writes nothing');
  // `help` is no area's command: the program's bundle runs it.
  await ok(['help', 'info']);
  const second = await state('program');
  assert.deepEqual(second.seen, ['', 'help']);
  assert.ok(second.size > first.size, 'the cache after help holds what --help compiled and more');

  // info runs from its area's bundle, with a cache of its own beside the program's.
  const info = await ok(['info', FIXTURE]);
  const area = await state('area-layers');
  assert.equal(area.names.length, 4, area.names.join(', '));
  assert.deepEqual(area.seen, ['info']);
  await ok(['export', FIXTURE, path.join(path.dirname(out), 'x.raw')]);
  const both = await state('area-layers');
  assert.deepEqual(both.seen, ['info', 'export']);
  assert.ok(both.size > area.size, 'the cache after export holds what info compiled and more');
  assert.equal(await ok(['info', FIXTURE]), info);
  assert.deepEqual((await state('program')).seen, ['', 'help'], 'the program\'s cache is not touched by an area\'s command');

  // Garbage of the same length: V8 rejects it, the command runs as before and the cache is rewritten.
  await writeFile(both.v8, Buffer.alloc(both.size, 0x5a));
  assert.equal(await ok(['info', FIXTURE]), info);
  const rewritten = await state('area-layers');
  assert.deepEqual(rewritten.seen, ['info']);
  assert.notEqual((await readFile(rewritten.v8))[0], 0x5a);

  // A new build has a new id: its first run of a bundle replaces that bundle's cache of the old build.
  await buildCli(out);
  assert.equal(await ok(['--help']), help);
  const rebuilt = await state('program');
  assert.equal(rebuilt.names.length, 4, rebuilt.names.join(', '));
  assert.notEqual(rebuilt.v8, second.v8);
  assert.deepEqual(rebuilt.seen, ['']);
  assert.equal(await ok(['info', FIXTURE]), info);
  const areaRebuilt = await state('area-layers');
  assert.equal(areaRebuilt.names.length, 4, areaRebuilt.names.join(', '));
  assert.notEqual(areaRebuilt.v8, rewritten.v8);
});

test('a bundle is not run once a source it holds changed in place, size and mtime kept', async (t) => {
  // A copy of the tree, so that the edit touches no file other tests run.
  const tree = await tempDir(t, 'obd-stale-');
  for (const part of ['src', 'scripts', 'package.json']) await cp(path.join(ROOT, part), path.join(tree, part), { recursive: true });
  await symlink(path.join(ROOT, 'node_modules'), path.join(tree, 'node_modules'));
  const program = path.join(tree, 'src', 'cli', 'program.ts');
  await utimes(program, NPM_MTIME, NPM_MTIME);
  const { buildCli: buildCopy } = (await import(pathToFileURL(path.join(tree, 'scripts', 'build-cli.ts')).href)) as typeof import('../../scripts/build-cli.ts');
  await buildCopy();
  const env = { XDG_CACHE_HOME: await tempDir(t, 'obd-startup-'), OBD_BUNDLE_DIR: '', OBD_DEBUG_BUNDLE: '1' };
  const launcher = path.join(tree, 'src', 'cli', 'obd.js');
  const before = await run([launcher, '--help'], env);
  assert.equal(before.code, 0, before.stderr);
  assert.equal(before.stderr, `obd: running the bundle in ${path.join(tree, 'dist', 'cli')} (program.cjs)\n`);
  assert.match(before.stdout, /OverlayBD layered block-device images/);

  // What an npm upgrade does to a file whose size did not change: new bytes, the same fixed mtime; only the ctime tells.
  const old = await stat(program);
  await writeFile(program, (await readFile(program, 'utf8')).replace('OverlayBD layered block-device images', 'OverlayBD layered block-device IMAGES'));
  await utimes(program, NPM_MTIME, NPM_MTIME);
  const now = await stat(program);
  assert.equal(now.size, old.size);
  assert.equal(now.mtimeMs, old.mtimeMs);
  const after = await run([launcher, '--help'], env);
  assert.equal(after.code, 0, after.stderr);
  assert.match(after.stdout, /OverlayBD layered block-device IMAGES/, 'obd ran the stale bundle');
  assert.equal(after.stderr, `obd: running the sources, not the bundle in ${path.join(tree, 'dist', 'cli')}: src/cli/program.ts changed since the build\n`);
  // Every area's bundle holds program.ts too.
  const area = await run([launcher, 'info', '--help'], env);
  assert.equal(area.code, 0, area.stderr);
  assert.equal(area.stderr, `obd: running the sources, not the bundle in ${path.join(tree, 'dist', 'cli')}: src/cli/program.ts changed since the build\n`);

  // Rebuilt, the bundle runs again, with the edit.
  await buildCopy();
  const rebuilt = await run([launcher, '--help'], env);
  assert.match(rebuilt.stderr, /^obd: running the bundle in /);
  assert.match(rebuilt.stdout, /OverlayBD layered block-device IMAGES/);

  // A source of one area only: the bundles that hold it (the program's, that area's) go stale,
  // another area's bundle still runs, with only its own inputs checked.
  const demo = path.join(tree, 'src', 'cli', 'demo.ts');
  await writeFile(demo, `${await readFile(demo, 'utf8')}\n`);
  const help = await run([launcher, '--help'], env);
  assert.equal(help.stderr, `obd: running the sources, not the bundle in ${path.join(tree, 'dist', 'cli')}: src/cli/demo.ts changed since the build\n`);
  const info = await run([launcher, 'info', '--help'], env);
  assert.equal(info.code, 0, info.stderr);
  assert.equal(info.stderr, `obd: running the bundle in ${path.join(tree, 'dist', 'cli')} (area-layers.cjs)\n`);
  assert.match(info.stdout, /^Usage: obd info /);
});

test('each area\'s commands run from that area\'s bundle, help and unknown commands from the whole program\'s', async (t) => {
  const dir = await fileBundle();
  const env = { ...MODES.bundle(), XDG_CACHE_HOME: await tempDir(t, 'obd-startup-'), OBD_DEBUG_BUNDLE: '1' };
  const manifest = JSON.parse(await readFile(path.join(dir, 'manifest.json'), 'utf8')) as { commands: Record<string, string>; bundles: Record<string, number[]> };
  const cases: [args: string[], bundle: string][] = [
    [['--help'], 'program'],
    [['help', 'info'], 'program'],
    [['no-such-command'], 'program'],
  ];
  for (const [commands] of AREAS) {
    const bundle = manifest.commands[commands[0]!]!;
    assert.match(bundle, /^area-/);
    for (const c of commands) assert.equal(manifest.commands[c], bundle, `${c} runs from the bundle of ${commands[0]}`);
    // Smaller: it holds one area's sources, not all.
    assert.ok(manifest.bundles[bundle]!.length < manifest.bundles.program!.length, `${bundle} holds fewer inputs than the program`);
    cases.push([[commands[0]!, '--help'], bundle]);
  }
  for (let i = 0; i < cases.length; i += 4) {
    await Promise.all(
      cases.slice(i, i + 4).map(async ([args, bundle]) => {
        const r = await run([LAUNCHER, ...args], env);
        assert.equal(r.stderr.split('\n')[0], `obd: running the bundle in ${dir} (${bundle}.cjs)`, `obd ${args.join(' ')}`);
      }),
    );
  }
  // The stand-in that keeps the other areas out of an area's bundle is never reached: the
  // command's own area registers it.
  const r = await run([LAUNCHER, 'info', '--json', FIXTURE], env);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout).wrapping, ['zfile', 'lsmt']);
});

test('every bundle is ASCII only, so that V8 holds its source as a one-byte string', async () => {
  const dir = await fileBundle();
  const files = (await readdir(dir)).filter((f) => f.endsWith('.cjs'));
  assert.ok(files.length > 3, files.join(', '));
  for (const f of files) {
    const text = await readFile(path.join(dir, f));
    const at = text.findIndex((b) => b > 0x7f);
    assert.equal(at, -1, `${f}: byte ${at} is not ASCII: ${text.subarray(Math.max(0, at - 40), at + 40).toString()}`);
  }
});

test('the strip cache serves the new text of a source changed in place, size and mtime kept', async (t) => {
  const dir = await tempDir(t, 'obd-strip-');
  const mod = path.join(dir, 'value.ts');
  const runner = path.join(dir, 'run.mjs');
  const cacheUrl = pathToFileURL(path.join(ROOT, 'src', 'runtime', 'strip-cache.js')).href;
  await writeFile(runner, `import { useStripCache } from ${JSON.stringify(cacheUrl)};\nuseStripCache(${JSON.stringify(dir)});\nconst { value } = await import('./value.ts');\nconsole.log(value);\n`);
  const entries = async () => (await readdir(path.join(dir, 'obd-ts')).catch(() => [] as string[])).filter((e) => e.startsWith('value-'));

  await writeFile(mod, 'export const value: number = 1;\n');
  await utimes(mod, NPM_MTIME, NPM_MTIME);
  const first = await stat(mod, { bigint: true });
  assert.equal((await run([runner])).stdout, '1\n');
  assert.equal((await entries()).length, 1, 'the first run stores the stripped text');
  assert.equal((await run([runner])).stdout, '1\n');
  assert.equal((await entries()).length, 1, 'an unchanged source hits its entry');

  // What an npm upgrade does to a file whose size did not change: new bytes, the same fixed mtime.
  await writeFile(mod, 'export const value: number = 2;\n');
  await utimes(mod, NPM_MTIME, NPM_MTIME);
  const second = await stat(mod, { bigint: true });
  assert.equal(second.size, first.size);
  assert.equal(second.mtimeNs, first.mtimeNs);
  assert.equal((await run([runner])).stdout, '2\n');
  assert.equal((await entries()).length, 2);
});

test('the launcher run as a program (its shebang) starts Node with the young generation capped', async (t) => {
  const dir = await tempDir(t, 'obd-shebang-');
  const probe = path.join(dir, 'argv.cjs');
  await writeFile(probe, "process.on('exit', () => process.stderr.write('execArgv=' + JSON.stringify(process.execArgv) + '\\n'));\n");
  const r = await collect(LAUNCHER, ['--version'], {
    env: { PATH: `${path.dirname(process.execPath)}:${process.env.PATH}`, NODE_OPTIONS: `--require=${probe}`, XDG_CACHE_HOME: dir },
  });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), '0.1.0');
  const argv = JSON.parse(/execArgv=(.*)/.exec(r.stderr)![1]!) as string[];
  assert.ok(argv.includes('--max-semi-space-size=16'), `node ran with ${JSON.stringify(argv)}`);
});

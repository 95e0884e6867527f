/**
 * Start-up of the installed `obd` command (src/cli/obd.js): every command still loads and
 * prints the help it prints with all areas registered, `--help` and a local command load only
 * what they use, and the strip cache never serves the old text of a changed source.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Command } from 'commander';
import { AREAS } from '../../src/cli/areas.ts';
import { collect, type CliResult } from '../helpers/cli.ts';
import { tempDir } from '../helpers/temp.ts';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const LAUNCHER = path.join(ROOT, 'src', 'cli', 'obd.js');

function run(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return collect(process.execPath, args, { env });
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

test('every command loads and prints the help it has with every area registered', async (t) => {
  const cache = await tempDir(t, 'obd-startup-');
  const expected = await expectedHelp();
  assert.ok(expected.size > 30, `only ${expected.size} commands found`);
  const top = await run([LAUNCHER, '--help'], { XDG_CACHE_HOME: cache });
  assert.equal(top.code, 0, top.stderr);
  for (const name of [...expected.keys()].filter((n) => !n.includes(' '))) assert.match(top.stdout, new RegExp(`^  ${name}\\b`, 'm'), `obd --help lists ${name}`);
  const names = [...expected.keys()];
  // Four at a time: each is a whole process.
  for (let i = 0; i < names.length; i += 4) {
    await Promise.all(
      names.slice(i, i + 4).map(async (name) => {
        const r = await run([LAUNCHER, ...name.split(' '), '--help'], { XDG_CACHE_HOME: cache });
        assert.equal(r.code, 0, `obd ${name} --help: ${r.stderr}`);
        assert.equal(r.stdout, expected.get(name), `obd ${name} --help`);
      }),
    );
  }
});

/** Runs the launcher with a hook that prints, at exit, the builtins and the project files the process loaded. */
async function loaded(args: string[], cache: string): Promise<{ builtins: string[]; files: string[] }> {
  const probe = [
    "import module from 'node:module';",
    'const files = new Set();',
    "module.registerHooks({ resolve(s, c, next) { const r = next(s, c); if (r.url.startsWith('file:')) files.add(r.url); return r; } });",
    "process.on('exit', () => process.stderr.write('\\n@@' + JSON.stringify({ builtins: process.moduleLoadList, files: [...files] })));",
  ].join('\n');
  const r = await run(['--import', `data:text/javascript,${encodeURIComponent(probe)}`, LAUNCHER, ...args], { XDG_CACHE_HOME: cache });
  assert.equal(r.code, 0, r.stderr);
  const at = r.stderr.lastIndexOf('\n@@');
  assert.ok(at >= 0, r.stderr);
  const { builtins, files } = JSON.parse(r.stderr.slice(at + 3)) as { builtins: string[]; files: string[] };
  return { builtins, files: files.map((u) => path.relative(ROOT, fileURLToPath(u))) };
}

test('--help and a local command load only what they use (warm caches)', async (t) => {
  const cache = await tempDir(t, 'obd-startup-');
  const dir = await tempDir(t, 'obd-startup-');
  const layer = path.join(dir, 'layer.lsmt');
  const raw = path.join(dir, 'disk.raw');
  await writeFile(raw, Buffer.alloc(1 << 20, 7));
  const made = await run([LAUNCHER, 'import', raw, layer], { XDG_CACHE_HOME: cache });
  assert.equal(made.code, 0, made.stderr);
  for (const args of [['--help'], ['info', layer]]) {
    await run([LAUNCHER, ...args], { XDG_CACHE_HOME: cache });
    const { builtins, files } = await loaded(args, cache);
    const label = `obd ${args.join(' ')}`;
    // node:https alone (node:tls, node:crypto) costs ~25 ms; the type stripper ~35 ms.
    for (const heavy of ['NativeModule tls', 'NativeModule crypto', 'NativeModule https', 'NativeModule http', 'NativeModule internal/deps/amaro/dist/index']) {
      assert.ok(!builtins.includes(heavy), `${label} loads ${heavy}`);
    }
    for (const f of files) assert.doesNotMatch(f, /^src\/(lsmt\/writable|zfile\/(reader|writer)|remote\/(http|registry)|live\/|io\/atomic)/, `${label} loads ${f}`);
    assert.ok(files.includes(path.join('src', 'cli', 'program.ts')), `${label}: the probe saw no project file`);
  }
});

test('the strip cache serves the new text of a source changed in place, size and mtime kept', async (t) => {
  const dir = await tempDir(t, 'obd-strip-');
  const mod = path.join(dir, 'value.ts');
  const runner = path.join(dir, 'run.mjs');
  const cacheUrl = pathToFileURL(path.join(ROOT, 'src', 'runtime', 'strip-cache.js')).href;
  await writeFile(runner, `import { useStripCache } from ${JSON.stringify(cacheUrl)};\nuseStripCache(${JSON.stringify(dir)});\nconst { value } = await import('./value.ts');\nconsole.log(value);\n`);
  const entries = async () => (await readdir(path.join(dir, 'obd-ts')).catch(() => [] as string[])).filter((e) => e.startsWith('value-'));

  // npm gives every file it extracts this mtime (1985-10-26 08:15 UTC).
  const NPM_MTIME = 499162500;
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

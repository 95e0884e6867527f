/**
 * `obd push`, `obd pull`, `obd copy`, `obd inspect`: images in OCI registries and OCI
 * image-layout directories. `addRemoteOptions`/`remoteOptions` and `addCacheOptions`/
 * `cacheOptions` are shared with `obd serve <ref>`; the registry stack itself is imported by
 * the commands that use it, so `obd serve` of local files does not load it.
 */
import path from 'node:path';
import { Option, type Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { formatSize } from '../io/util.ts';
import { DEFAULT_CACHE_SIZE, DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_UNIT } from '../remote/defaults.ts';
import type { LazyOptions, RemoteOptions } from '../remote/image.ts';
import type { ImageReference } from '../remote/reference.ts';
import { DEFAULT_TAG, formatReference, referenceTarget, resolveReference } from '../remote/reference.ts';
import type { OpenedLayer } from '../image/open.ts';
import { NO_VERIFY_CHAIN, VERIFY_CHAIN, verifyLayers } from './chain.ts';
import { intArg, output, progressBar, sizeArg } from './common.ts';
import { checkOutputs, RefusedOutputError } from './outputs.ts';

/** Retries the CLI asks for (the registry client's own default). */
const DEFAULT_RETRIES = 4;

export interface RemoteFlags {
  plainHttp?: boolean;
  insecure?: boolean;
  credsFile?: string;
  proxy?: string;
  platform?: string;
  timeout?: number;
  retries?: number;
}

/** Adds the flags every command that talks to a registry understands. */
export function addRemoteOptions(cmd: Command): Command {
  return cmd
    .option('--plain-http', 'talk HTTP, not HTTPS (default for loopback registries)')
    .option('--insecure', 'accept any TLS certificate')
    .option('--creds-file <file>', 'credentials file ({"auths": {...}} as docker config.json); ~/.docker/config.json is always read')
    .option('--proxy <url>', 'send every request through this proxy: http://, https://, socks5:// or socks5h:// (the proxy resolves names), USER:PASSWORD@ if it wants them; default: HTTPS_PROXY/HTTP_PROXY/ALL_PROXY less NO_PROXY')
    .option('--platform <os/arch>', 'platform to pick from an image index (default linux/<this arch>)')
    .addOption(new Option('--timeout <ms>', 'give up a request after this long without data').argParser(intArg).default(DEFAULT_IDLE_TIMEOUT_MS))
    .addOption(new Option('--retries <n>', 'retries for resets, timeouts and 5xx').argParser(intArg).default(DEFAULT_RETRIES));
}

export function remoteOptions(f: RemoteFlags): RemoteOptions {
  const o: RemoteOptions = { plainHttp: f.plainHttp || undefined, insecure: f.insecure, credsFile: f.credsFile, proxy: f.proxy, retries: f.retries, idleTimeoutMs: f.timeout };
  if (f.platform) {
    const [os, architecture, variant] = f.platform.split('/');
    if (!os || !architecture) throw new InvalidArgumentError(`--platform "${f.platform}": want os/arch[/variant]`);
    o.platform = { os, architecture, ...(variant ? { variant } : {}) };
  }
  return o;
}

export interface CacheFlags {
  cacheDir?: string;
  cacheSize?: number;
  refill?: number;
  requireVerity?: boolean;
}

/** Adds the lazy-read cache flags (`obd serve <ref>`). */
export function addCacheOptions(cmd: Command): Command {
  return cmd
    .option('--cache-dir <dir>', 'on-disk cache for remote layers (persistent; default: memory only)')
    .addOption(new Option('--cache-size <size>', 'cache capacity').argParser(sizeArg).default(DEFAULT_CACHE_SIZE, '4G'))
    .addOption(new Option('--refill <size>', 'refill unit for remote reads').argParser(sizeArg).default(DEFAULT_UNIT, '256K'))
    .option('--require-verity', 'refuse images whose layers carry no verity tree (every lazy read is verified either way when they do)');
}

export function cacheOptions(f: CacheFlags): LazyOptions {
  return { cacheDir: f.cacheDir, cacheSize: f.cacheSize, refill: f.refill, requireVerity: f.requireVerity };
}


/** Opens layer files to look at their headers, then closes them. */
async function checkLayerFiles(files: string[], check: (layers: OpenedLayer[]) => void): Promise<void> {
  const { openLayerFiles } = await import('../image/open.ts');
  const layers = await openLayerFiles(files);
  try {
    check(layers);
  } finally {
    await Promise.all(layers.map((l) => l.source.close()));
  }
}

/**
 * A local target (`oci:DIR`, `oci-archive:FILE`) that already holds an image at `tag` is
 * refused unless `force`; registries replace tags as usual.
 */
export async function refuseExistingTag(target: ImageReference, tag: string | undefined, force: boolean | undefined): Promise<void> {
  if (target.kind === 'registry' || tag === undefined || force) return;
  const { openRepository } = await import('../remote/image.ts');
  const opened = await openRepository(target).catch(() => undefined);
  if (!opened) return;
  try {
    const held = await opened.repo.getManifest(tag).then(() => true, () => false);
    if (held) throw new RefusedOutputError(`${formatReference(target)}: already holds an image at the tag "${tag}" (give --force to replace it)`);
  } finally {
    await opened.close();
  }
}

/**
 * The output rule for pull and copy: the target is never the source (the same layout or
 * archive and tag, or a pull into the layout it reads), and an existing target needs --force.
 */
async function refuseCopyTarget(src: string, dst: string, force: boolean | undefined, srcArg: string): Promise<void> {
  const s = await resolveReference(src);
  const local = s.kind === 'registry' ? [] : [{ path: s.path, arg: srcArg }];
  if (!dst.startsWith('oci:') && !dst.startsWith('oci-archive:')) {
    // A pull into a directory: never the source layout; one that holds a pulled image needs --force.
    await checkOutputs([{ path: dst, arg: '<dir>' }], local, true);
    await checkOutputs([{ path: path.join(dst, 'config.v1.json'), arg: '<dir>' }], [], force);
    return;
  }
  const t = await resolveReference(dst);
  const tag = targetTag(t);
  if (t.kind !== 'registry' && tag === referenceTarget(s)) await checkOutputs([{ path: t.path, arg: '<dst>' }], local, true);
  await refuseExistingTag(t, tag, force);
}

/** The tag push and copy give the target: its own, else `latest` (none for a digest). */
function targetTag(t: ImageReference): string | undefined {
  return t.tag ?? (t.digest ? undefined : DEFAULT_TAG);
}

export function register(program: Command): void {
  addRemoteOptions(
    program
      .command('push')
      .description('push layer files (bottom → top) as an image to a registry or oci:DIR; plain LSMT layers are compressed and tar-wrapped')
      .usage('[options] <layer...> <ref>')
      .argument('<layer...>', 'layer files (LSMT, zfile, or tar-wrapped), then the target reference')
      .option('--append', 'put the layers on top of the image already at the reference')
      .option('--mount-from <repo...>', 'repositories of the same registry to mount existing blobs from')
      .option('--fs-type <type>', 'record the layer filesystem (blob-fs-type annotation), e.g. ext4')
      .addOption(new Option('-z, --compress <algorithm>', 'ZFile codec for plain LSMT layers (as commit -z)').choices(['lz4', 'zstd']).default('lz4'))
      .addOption(new Option('--block-size <size>', 'ZFile block size for plain LSMT layers, 4K..64K').argParser(sizeArg).default(4096, '4K'))
      .option(...VERIFY_CHAIN)
      .option(...NO_VERIFY_CHAIN)
      .option('-f, --force', 'replace the image already at an oci:DIR or oci-archive: target tag (without --append)')
      .option('--no-verity', 'publish no verity trees (by default each new layer gets one, so lazy reads can be verified)')
      .option('--json', 'print the result as JSON'),
  ).action(async (args: string[], o: RemoteFlags & { append?: boolean; mountFrom?: string[]; fsType?: string; compress: 'lz4' | 'zstd'; blockSize: number; verifyChain?: boolean; force?: boolean; verity: boolean; json?: boolean }) => {
    if (args.length < 2) throw new InvalidArgumentError('need at least one layer file and a target reference');
    const ref = args[args.length - 1]!;
    const files = args.slice(0, -1);
    const target = await resolveReference(ref);
    if (!o.append) await refuseExistingTag(target, targetTag(target), o.force);
    if (files.length > 1) await checkLayerFiles(files, (layers) => verifyLayers(layers, o.verifyChain));
    const b = progressBar('push', !o.json);
    try {
      const { pushImage } = await import('../image/push.ts');
      const r = await pushImage(files, ref, {
        ...remoteOptions(o),
        checkBase: async (base) => {
          const top = base.layers.at(-1);
          if (!top || o.verifyChain === false) return;
          const { openLayer } = await import('../remote/image.ts');
          const blob = await openLayer(base.repo, top, undefined);
          try {
            const { openLayerSource } = await import('../image/open.ts');
            const l = await openLayerSource(blob);
            await checkLayerFiles([files[0]!], ([bottom]) => verifyLayers([{ ...l, source: { name: `the top layer of ${ref} (${top.digest})` } }, bottom!], true));
          } finally {
            await blob.close();
          }
        },
        append: o.append,
        mountFrom: o.mountFrom,
        fsType: o.fsType,
        zfile: { algorithm: o.compress, blockSize: o.blockSize },
        verity: o.verity,
        onProgress: b.onProgress,
      });
      b.stop();
      output(o.json, r, () =>
        [
          ...r.layers.map((l) => `${l.result.padEnd(8)} ${l.digest} ${formatSize(l.size).padStart(10)}  ${l.file ?? '(from the existing image)'}${l.kind === 'lsmt' ? ' (compressed)' : l.kind === 'zfile' ? ' (tar-wrapped)' : ''}`),
          `pushed ${r.reference}@${r.digest}`,
        ].join('\n'),
      );
    } finally {
      b.stop();
    }
  });

  addRemoteOptions(
    program
      .command('pull')
      .description('download an image: into DIR (blobs + config.v1.json for obd serve), or copy into oci:DIR')
      .argument('<ref>', 'image reference (registry or oci:DIR)')
      .argument('<dir>', 'target directory, or oci:DIR for an OCI image layout')
      .option('-j, --jobs <n>', 'blobs downloaded at once', intArg, 3)
      .option('-f, --force', 'pull again into a DIR that holds a pulled image, or replace the image at an oci:DIR or oci-archive: tag')
      .option('--json', 'print the result as JSON'),
  ).action(async (ref: string, dir: string, o: RemoteFlags & { jobs: number; force?: boolean; json?: boolean }) => {
    await refuseCopyTarget(ref, dir, o.force, '<ref>');
    const b = progressBar('pull', !o.json);
    try {
      const [{ copyImage }, { pullImage }] = await Promise.all([import('../remote/pull.ts'), import('../image/pull.ts')]);
      if (dir.startsWith('oci:') || dir.startsWith('oci-archive:')) {
        const r = await copyImage(ref, dir, { ...remoteOptions(o), onProgress: b.onProgress });
        b.stop();
        output(o.json, r, () => `${r.blobs.map((x) => `${x.result.padEnd(8)} ${x.digest} ${formatSize(x.size).padStart(10)}`).join('\n')}\ncopied ${r.source} → ${r.target}@${r.digest}`);
        return;
      }
      const r = await pullImage(ref, dir, { ...remoteOptions(o), concurrency: o.jobs, onProgress: b.onProgress });
      b.stop();
      output(o.json, r, () => `${r.layers.map((l) => `${l.fetched ? 'fetched' : 'present'}  ${l.digest} ${formatSize(l.size).padStart(10)}`).join('\n')}\npulled ${r.reference}@${r.digest}\nconfig: ${r.configPath}`);
    } finally {
      b.stop();
    }
  });

  addRemoteOptions(
    program
      .command('copy')
      .description('copy an image between registries and OCI layouts (blobs already there are skipped or mounted)')
      .argument('<src>', 'source reference')
      .argument('<dst>', 'target reference')
      .option('--mount-from <repo...>', 'more repositories of the target registry to mount blobs from')
      .option('-f, --force', 'replace the image already at an oci:DIR or oci-archive: target tag')
      .option('--json', 'print the result as JSON'),
  ).action(async (src: string, dst: string, o: RemoteFlags & { mountFrom?: string[]; force?: boolean; json?: boolean }) => {
    await refuseCopyTarget(src, dst, o.force, '<src>');
    const b = progressBar('copy', !o.json);
    try {
      const { copyImage } = await import('../remote/pull.ts');
      const r = await copyImage(src, dst, { ...remoteOptions(o), mountFrom: o.mountFrom, onProgress: b.onProgress });
      b.stop();
      output(o.json, r, () => `${r.blobs.map((x) => `${x.result.padEnd(8)} ${x.digest} ${formatSize(x.size).padStart(10)}`).join('\n')}\ncopied ${r.source} → ${r.target}@${r.digest}`);
    } finally {
      b.stop();
    }
  });

  addRemoteOptions(
    program
      .command('inspect')
      .description('show an image manifest: layers, sizes and overlaybd annotations')
      .argument('<ref>', 'image reference (registry, oci:DIR, oci-archive:FILE or a layout directory)')
      .option('--raw', 'print the manifest (or index) exactly as stored, byte for byte')
      .option('--json', 'print the result as JSON'),
  ).action(async (ref: string, o: RemoteFlags & { raw?: boolean; json?: boolean }) => {
    const [{ openRepository, resolveImage }, { Annotation }, { VerityAnnotation }] = await Promise.all([import('../remote/image.ts'), import('../remote/manifest.ts'), import('../verity/annotations.ts')]);
    const r = await resolveReference(ref);
    const opened = await openRepository(r, remoteOptions(o));
    try {
      if (o.raw) {
        process.stdout.write((await opened.repo.getManifest(referenceTarget(r))).bytes);
        return;
      }
      const img = await resolveImage(opened.repo, referenceTarget(r), remoteOptions(o).platform);
      const value = { reference: formatReference(r), digest: img.digest, mediaType: img.raw.mediaType, manifest: img.manifest };
      output(o.json, value, () =>
        [
          `${value.reference}@${img.digest} (${img.raw.mediaType})`,
          `config  ${img.manifest.config.digest} ${formatSize(img.manifest.config.size)}`,
          ...img.manifest.layers.map((l, i) => {
            const a = l.annotations ?? {};
            const obd = a[Annotation.version] ? ` overlaybd ${a[Annotation.version]}${a[Annotation.fsType] ? ` ${a[Annotation.fsType]}` : ''}` : '';
            const recompressed = /\+(gzip|zstd)$/.test(l.mediaType) ? ` ${l.mediaType} (a compressed stream, not servable)` : '';
            const verity = a[VerityAnnotation.root] ? ` verity (tree ${a[VerityAnnotation.tree]})` : '';
            return `layer ${i} ${l.digest} ${formatSize(l.size).padStart(10)}${obd}${verity}${recompressed}`;
          }),
        ].join('\n'),
      );
    } finally {
      await opened.close();
    }
  });
}

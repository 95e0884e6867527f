/**
 * Every fuzz target, in the order a run visits them; add new parsers and protocols here.
 * Targets load on demand, so a worker restarted after a hang imports only what it runs.
 */
import type { Target } from '../target.ts';

interface Entry {
  name: string;
  about: string;
  /** Only run when named (harness checks). */
  hidden?: boolean;
  load: () => Promise<Target>;
}

const ENTRIES: readonly Entry[] = [
  { name: 'lsmt', about: 'sealed LSMT layers: header, index, trailer (openLayerSource → Stack → extents + reads)', load: async () => (await import('./layers.ts')).lsmtTarget },
  { name: 'zfile', about: 'zfiles: header, trailer, jump table, blocks (ZFileReader.open → whole content)', load: async () => (await import('./layers.ts')).zfileTarget },
  { name: 'layer-zfile', about: 'LSMT layers inside zfiles (openLayerSource peels the zfile, then the layer is read)', load: async () => (await import('./layers.ts')).layerZFileTarget },
  { name: 'tar', about: 'tar wrappers around zfiles and layers (openTarEntry: PAX and ustar headers, sizes)', load: async () => (await import('./layers.ts')).tarTarget },
  { name: 'stack', about: 'one mutated layer among sound ones: merged index, chain check (Stack with verifyChain → extents + reads)', load: async () => (await import('./layers.ts')).stackTarget },
  { name: 'writable', about: 'writable layers: data + index file pairs (WritableLayer.open with recovery → extents + reads)', load: async () => (await import('./writable.ts')).writableTarget },
  { name: 'config', about: 'config.v1.json: lowers (file, dir), upper, resultFile, trace path (openImage on the config → reads)', load: async () => (await import('./images.ts')).configTarget },
  { name: 'manifest', about: 'OCI/docker manifests and indexes (media type sniffing, parseManifest/parseIndex, platform choice)', load: async () => (await import('./images.ts')).manifestTarget },
  { name: 'oci-layout', about: 'OCI image layouts: index.json, oci-layout, image index and manifest blobs (openImage on oci:DIR:tag → reads)', load: async () => (await import('./images.ts')).ociLayoutTarget },
  { name: 'trace', about: 'prefetch trace files (decodeTrace, then replayTrace over two layers)', load: async () => (await import('./remote-state.ts')).traceTarget },
  { name: 'cache', about: 'blob-cache entries: metadata (bitmap, unit CRCs) and data files (BlobCache reopened → lazy reads)', load: async () => (await import('./remote-state.ts')).cacheTarget },
  { name: 'nbd', about: 'the NBD server: handshake options and transmission requests (mutated client streams, then a witness client)', load: async () => (await import('./nbd.ts')).nbdTarget },
  { name: 'control', about: 'the control API of obd serve --control: raw HTTP requests (methods, paths, headers, JSON bodies), then a witness request and reads', load: async () => (await import('./control.ts')).controlTarget },
  { name: 'selftest', about: 'fails on purpose in every way (checks the harness itself)', hidden: true, load: async () => (await import('./selftest.ts')).selftestTarget },
];

/** The targets a run covers when none are named. */
export const DEFAULT_TARGETS: readonly string[] = ENTRIES.filter((e) => !e.hidden).map((e) => e.name);

export function listTargets(): readonly { name: string; about: string; hidden: boolean }[] {
  return ENTRIES.map((e) => ({ name: e.name, about: e.about, hidden: !!e.hidden }));
}

export function hasTarget(name: string): boolean {
  return ENTRIES.some((e) => e.name === name);
}

export async function loadTarget(name: string): Promise<Target> {
  const e = ENTRIES.find((x) => x.name === name);
  if (!e) throw new Error(`no fuzz target "${name}"`);
  return e.load();
}

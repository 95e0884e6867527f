/**
 * The C library, for the few calls Node's own modules do not reach (holes, thread priority,
 * returning freed heap memory). It goes through koffi (an FFI with prebuilt binaries), loaded
 * on first use so commands that never need it never load it (~25 ms when cold).
 */
import { createRequire } from 'node:module';
import { NotSupportedError } from './errors.ts';

type Koffi = typeof import('koffi');

let loaded: { koffi: Koffi; lib: ReturnType<Koffi['load']> } | undefined;

/** koffi and glibc's libc.so.6; a NotSupportedError off Linux or where libc.so.6 is not glibc's. */
export function libc(what: string): { koffi: Koffi; lib: ReturnType<Koffi['load']> } {
  if (loaded) return loaded;
  if (process.platform !== 'linux') throw new NotSupportedError(`${what} needs Linux (this is ${process.platform})`);
  const koffi = createRequire(import.meta.url)('koffi') as Koffi;
  loaded = { koffi, lib: koffi.load('libc.so.6') };
  return loaded;
}

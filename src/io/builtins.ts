/**
 * Node builtins taken as CommonJS, on first use. An ESM import of node:http or node:https
 * evaluates every export of its facade, and the WebSocket getter among them loads undici
 * (~25-45 ms of start-up, for nothing); node:tls (~20 ms, also under node:https) and node:net
 * (with node:stream) are needed only by what serves or connects, not by `obd --help`. Import
 * them from here; types still come from the modules themselves.
 */
export function http(): typeof import('node:http') {
  return process.getBuiltinModule('node:http');
}

/** node:https on first use: a plain-HTTP registry (every loopback one) never needs node:tls. */
export function https(): typeof import('node:https') {
  return process.getBuiltinModule('node:https');
}

/** node:tls on first use: most servers never offer TLS. */
export function tls(): typeof import('node:tls') {
  return process.getBuiltinModule('node:tls');
}

/**
 * node:fs/promises on use, for modules a local command or `obd --help` loads without running
 * what needs it (the CLI's areas, io/lock.ts): loading it loads readline, the REPL's history,
 * fs watchers and node:os as well (~2.6 ms of CPU). What `obd info` and `obd export` do run
 * uses file descriptors (io/file.ts) and io/fs-async.ts instead.
 */
export function fsPromises(): typeof import('node:fs/promises') {
  return process.getBuiltinModule('node:fs/promises');
}

/** node:net on use, for code that a command registering its options loads but does not run. */
export function net(): typeof import('node:net') {
  return process.getBuiltinModule('node:net');
}

/**
 * node:http and node:https taken as CommonJS: an ESM import of either evaluates every export
 * of its facade, and the WebSocket getter among them loads undici (~25-45 ms of start-up,
 * for nothing). Import them from here; types still come from the modules themselves.
 */
export const http: typeof import('node:http') = process.getBuiltinModule('node:http');

/**
 * node:https on first use: it loads node:tls (~20 ms of start-up), which a plain-HTTP
 * registry (every loopback one) never needs.
 */
export function https(): typeof import('node:https') {
  return process.getBuiltinModule('node:https');
}

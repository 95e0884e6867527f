/**
 * node:http and node:https taken as CommonJS: an ESM import of either evaluates every export
 * of its facade, and the WebSocket getter among them loads undici (~25-45 ms of start-up,
 * for nothing). Import them from here; types still come from the modules themselves.
 */
export const http: typeof import('node:http') = process.getBuiltinModule('node:http');
export const https: typeof import('node:https') = process.getBuiltinModule('node:https');

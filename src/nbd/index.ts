export { NbdServer, type NbdAddress, type NbdServerOptions, type NbdExportInfo } from './server.ts';
export type { NbdExportOptions, NbdExportTable } from './exports.ts';
export type { NbdEvent } from './connection.ts';
export { NbdDisconnect, NbdServerError, NbdClientError } from './errors.ts';
export { NbdClient, parseNbdUri, type NbdConnectOptions, type StatusRun } from './client.ts';
export { dirtyPlan, DIRTY_BITMAP_PREFIX } from './dirty.ts';
export { nbdUri, nbdErrorOf } from './protocol.ts';
export { NbdTls, NbdTlsError, loadCertificates, loadPskFile, parsePskKeys, type NbdTlsOptions, type NbdTlsCredentials, type TlsMode } from './tls.ts';

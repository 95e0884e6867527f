export { NbdServer, type NbdAddress, type NbdServerOptions, type NbdExportInfo } from './server.ts';
export type { NbdExportOptions, NbdExportTable } from './exports.ts';
export type { NbdEvent } from './connection.ts';
export { NbdDisconnect, NbdServerError } from './errors.ts';
export { nbdUri, nbdErrorOf } from './protocol.ts';

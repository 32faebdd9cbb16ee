export { SshConnection, withSsh, describe as describeTarget } from './connection';
export type { SshAuth, SshTarget, RunOptions, RunResult, RemoteProcess, RemoteReadable, RemoteWriter } from './connection';
export { parseHostKeyPins, pinsForHost, fingerprintOf } from './hostKeys';
export type { HostKeyPin } from './hostKeys';
export { startTimer } from './timer';
export { criticalPath } from './roundTrips';
export type { ExecRecording, ExecSpan } from './roundTrips';

export { backupVm, checkBackupRequest, CHECKPOINT_PREFIX } from './backup';
export type { BackupMode, BackupRequest, BackupHooks, BackupResult, DiskResult } from './backup';
export type { Progress } from './strategies';
export * from './manifest';
export * from './layout';
export { acquireVmLock, LOCK_FILE } from './lock';
export type { VmLock } from './lock';
export { formatBytes } from './hostFiles';

export { backupVm, checkBackupRequest, CHECKPOINT_PREFIX, MAX_TIMEOUT_MINUTES } from './backup';
export type { BackupMode, BackupRequest, BackupHooks, BackupResult, DiskResult } from './backup';
export type { Progress } from './strategies';
export { formatBytes } from './hostFiles';

export { backupVm, checkBackupRequest, CHECKPOINT_PREFIX, MAX_NEW_FULL_DAYS, MAX_NEW_FULL_INCREMENTALS, MAX_TIMEOUT_MINUTES } from './backup';
export type { NewFullPolicy } from './plan';
export type { BackupMode, BackupRequest, BackupHooks, BackupResult, DiskResult } from './backup';
export type { Progress } from './strategies';
// scripts/demo.ts reads it from here.
export { formatBytes } from '../format';

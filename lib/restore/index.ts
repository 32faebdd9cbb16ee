export { planRestore, chainOf, RESTORE_TEMP_SUFFIX } from './plan';
export type { DiskRestorePlan, RestoreFacts, RestorePlan, RestoreRequest, ShutdownFirst, VmDiskFact } from './plan';
export { restoreBackup, DEFAULT_RESTORE_TIMEOUT_MS, RESTORE_SCRIPT } from './restore';
export type { RestoredDiskResult, RestoreOptions, RestoreResult } from './restore';

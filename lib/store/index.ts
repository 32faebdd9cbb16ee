/**
 * The on-host format every reader and writer shares: where backups live (layout), what makes a
 * folder a backup (manifest), the per-VM lock, which names can be ours (paths) and the
 * verification record. lib/backup writes it; lib/catalog reads and changes it.
 */
export * from './layout';
export * from './manifest';
export { acquireVmLock, LOCK_FILE } from './lock';
export type { VmLock } from './lock';
export { QUARANTINE_SUFFIX, STALE_FOLDER_FILES, backupLocation, isQuarantinedName, isStaleFolderEntry, isVmDirName, parseBackupPath, vmDirsFor } from './paths';
export type { BackupLocation } from './paths';
export { VERIFICATION_FORMAT, VERIFICATION_VERSION, parseVerification, serializeVerification } from './verification';
export type { DiskVerification, ParentVerification, QemuImgCheck, VerificationRecord } from './verification';
export { CONSOLIDATION_FORMAT, CONSOLIDATION_JOURNAL, FULL_PARTIAL_SUFFIX, parseJournal, serializeJournal } from './consolidation';
export type { ConsolidationJournal } from './consolidation';

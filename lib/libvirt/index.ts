export { checkFilter, discoverVms } from './discover';
export type { DiscoveredVm, DiscoveredDisk, DiscoveryFilter, DiscoveryResult, DomainState, ImageLayer } from './discover';
export { backupXml, checkpointXml, parseDomainXml, parseCheckpointSizes } from './domainXml';
export type { BackupDiskTarget, DomainDefinition, DomainDisk, DiskDevice, DiskType, DiskSource } from './domainXml';
export { dumpDomainXml, virshVersion, virshFailure, runVirsh } from './virsh';
export type { LibvirtVersions } from './virsh';
export { abortJob, backupState, commitOverlays, deleteCheckpoints, listCheckpoints, runPushBackupJob, snapshotOverlays } from './jobs';
export type { BackupState, DiskOverlay, JobProgress, PushJob, PushJobResult, Quiesce } from './jobs';

export { checkFilter, discoverVms } from './discover';
export type { DiscoveredVm, DiscoveredDisk, DiscoveryFilter, DiscoveryResult, DomainState, ImageLayer } from './discover';
export { backupXml, checkpointXml, parseDomainXml, parseCheckpointSizes } from './domainXml';
export type { BackupDiskTarget, DomainDefinition, DomainDisk, DiskDevice, DiskType, DiskSource } from './domainXml';
export { dumpDomainXml, virshVersion, virshFailure, runVirsh } from './virsh';
export type { LibvirtVersions } from './virsh';
export { abortJob, backupState, deleteCheckpoints, listCheckpoints, mergeOverlays, runOnOverlays, runPushBackupJob } from './jobs';
export type { BackupState, DiskOverlay, JobProgress, OverlayJob, PushJob, PushJobResult, Quiesce } from './jobs';

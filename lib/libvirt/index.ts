export { discoverVms } from './discover';
export type { DiscoveredVm, DiscoveredDisk, DiscoveryFilter, DiscoveryResult, DomainState, ImageLayer } from './discover';
export { parseDomainXml, parseCheckpointSizes } from './domainXml';
export type { DomainDefinition, DomainDisk, DiskDevice, DiskType, DiskSource } from './domainXml';
export { virshVersion, virshFailure, runVirsh, newMarker, splitSections } from './virsh';
export type { LibvirtVersions } from './virsh';
export {
	abortJob,
	checkpointDirtyBytes,
	deleteCheckpoints,
	listCheckpoints,
	startBackupJob,
	waitForBackupJob,
} from './jobs';
export type { JobProgress, JobStart, Quiesce } from './jobs';

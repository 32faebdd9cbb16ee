export { discoverVms } from './discover';
export type { DiscoveredVm, DiscoveredDisk, DiscoveryFilter, DiscoveryResult, DomainState, ImageLayer } from './discover';
export { parseDomainXml } from './domainXml';
export type { DomainDefinition, DomainDisk, DiskDevice, DiskType, DiskSource } from './domainXml';
export { virshVersion, virshFailure } from './virsh';
export type { LibvirtVersions } from './virsh';

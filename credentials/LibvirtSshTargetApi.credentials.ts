import type { ICredentialType, INodeProperties, Icon } from 'n8n-workflow';
import { LibvirtSshApi } from './LibvirtSshApi.credentials';

/**
 * SSH access to a second host that receives exports (an archive file or a replica), next to the
 * libvirt host the backups are read from. n8n keys a node's credentials by type, so the second
 * connection needs a type of its own; its fields are the libvirt host's, minus the libvirt URI.
 */
export class LibvirtSshTargetApi implements ICredentialType {
	name = 'libvirtSshTargetApi';

	displayName = 'Libvirt Export Target (SSH)';

	icon: Icon = { light: 'file:libvirt.svg', dark: 'file:libvirt.dark.svg' };

	documentationUrl = 'https://github.com/n8n-nodes-libvirt-backup/n8n-nodes-libvirt-backup/blob/main/docs/credentials/libvirtSshTargetApi.md';

	properties: INodeProperties[] = new LibvirtSshApi().properties.filter((property) => property.name !== 'libvirtUri');
}

import type { ICredentialType, INodeProperties, Icon } from 'n8n-workflow';

/** SSH access to one libvirt host. Tested by the nodes' `libvirtSshConnectionTest`. */
export class LibvirtSshApi implements ICredentialType {
	name = 'libvirtSshApi';

	displayName = 'Libvirt Host (SSH)';

	icon: Icon = { light: 'file:libvirt.svg', dark: 'file:libvirt.dark.svg' };

	documentationUrl = 'https://github.com/n8n-nodes-libvirt-backup/n8n-nodes-libvirt-backup/blob/main/docs/credentials/libvirtSshApi.md';

	properties: INodeProperties[] = [
		{ displayName: 'Host', name: 'host', type: 'string', default: '', required: true, placeholder: 'kvm01.example.com' },
		{ displayName: 'Port', name: 'port', type: 'number', default: 22, required: true },
		{ displayName: 'Username', name: 'username', type: 'string', default: 'root', required: true },
		{
			displayName: 'Authentication',
			name: 'authMethod',
			type: 'options',
			options: [
				{ name: 'Private Key', value: 'privateKey' },
				{ name: 'Password', value: 'password' },
			],
			default: 'privateKey',
		},
		{
			displayName: 'Private Key',
			name: 'privateKey',
			type: 'string',
			typeOptions: { password: true, rows: 6 },
			default: '',
			description: 'The whole OpenSSH or PEM private key, including its BEGIN and END lines',
			displayOptions: { show: { authMethod: ['privateKey'] } },
		},
		{
			displayName: 'Passphrase',
			name: 'passphrase',
			type: 'string',
			typeOptions: { password: true },
			default: '',
			description: 'Passphrase of the private key, if it has one',
			displayOptions: { show: { authMethod: ['privateKey'] } },
		},
		{
			displayName: 'Password',
			name: 'password',
			type: 'string',
			typeOptions: { password: true },
			default: '',
			displayOptions: { show: { authMethod: ['password'] } },
		},
		{
			displayName: 'Pinned Host Keys',
			name: 'hostKeys',
			type: 'string',
			typeOptions: { rows: 3 },
			default: '',
			placeholder: 'SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU',
			description:
				'The host keys this host may present: OpenSSH known_hosts lines or SHA256 fingerprints, one per line. Get them on a trusted machine with: ssh-keyscan HOST | ssh-keygen -lf -',
		},
		{
			displayName: 'Skip Host Key Verification (Insecure)',
			name: 'skipHostKeyVerification',
			type: 'boolean',
			default: false,
			description:
				'Whether to accept ANY host key. Anyone who can intercept the connection could then read your backups and run commands as this user. Only for throwaway lab hosts.',
		},
		{
			// n8n shows no message for a passing credential test, so this is the editor's warning.
			displayName:
				'Host key NOT verified: anyone who can intercept the connection can read your backups and run commands as this user. Every node run warns about it. Pin the host key above instead.',
			name: 'skipHostKeyVerificationNotice',
			type: 'notice',
			default: '',
			displayOptions: { show: { skipHostKeyVerification: [true] } },
		},
		{
			displayName: 'Sudo',
			name: 'sudoMode',
			type: 'options',
			options: [
				{ name: 'None', value: 'none', description: 'The user can run virsh and read the disks itself' },
				{ name: 'Sudo Without Password', value: 'nopasswd' },
				{ name: 'Sudo With Password', value: 'password' },
			],
			default: 'none',
		},
		{
			displayName: 'Sudo Password',
			name: 'sudoPassword',
			type: 'string',
			typeOptions: { password: true },
			default: '',
			displayOptions: { show: { sudoMode: ['password'] } },
		},
		{
			displayName: 'Libvirt URI',
			name: 'libvirtUri',
			type: 'string',
			default: 'qemu:///system',
			description: 'The libvirt connection URI on the host, as given to virsh -c',
		},
	];
}

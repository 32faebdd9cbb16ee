/**
 * The credential test every node offers (`testedBy: 'libvirtSshConnectionTest'`): connect, verify
 * the host key, run `virsh -c URI version`, and answer with versions or a precise error. A
 * credential that skips host key verification still answers OK (it did connect), with the warning.
 */
import type { ICredentialTestFunctions, ICredentialsDecrypted, INodeCredentialTestResult } from 'n8n-workflow';
import { virshVersion } from '../../lib/libvirt';
import { withSsh } from '../../lib/ssh';
import { hostKeyWarning } from './executeRouted';
import { hostFromCredentials } from './target';

export async function libvirtSshConnectionTest(
	this: ICredentialTestFunctions,
	credential: ICredentialsDecrypted,
): Promise<INodeCredentialTestResult> {
	try {
		const { target, uri } = hostFromCredentials(credential.data ?? {});
		const { versions, presented } = await withSsh(target, async (ssh) => ({ versions: await virshVersion(ssh, uri), presented: ssh.hostKeyFingerprint }));
		const hypervisor = versions.hypervisor ? `, ${versions.hypervisor} ${versions.hypervisorVersion ?? ''}`.trimEnd() : '';
		const warning = hostKeyWarning(target, presented);
		return { status: 'OK', message: `Connected to ${uri}: libvirt ${versions.libvirt ?? 'unknown'}${hypervisor}${warning ? `. WARNING: ${warning}` : ''}` };
	} catch (error) {
		return { status: 'Error', message: (error as Error).message };
	}
}

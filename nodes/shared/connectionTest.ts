/**
 * The credential test every node offers (`testedBy: 'libvirtSshConnectionTest'`): connect, verify
 * the host key, run `virsh -c URI version`, and answer with versions or a precise error.
 */
import type { ICredentialTestFunctions, ICredentialsDecrypted, INodeCredentialTestResult } from 'n8n-workflow';
import { virshVersion } from '../../lib/libvirt';
import { withSsh } from '../../lib/ssh';
import { hostFromCredentials } from './target';

export async function libvirtSshConnectionTest(
	this: ICredentialTestFunctions,
	credential: ICredentialsDecrypted,
): Promise<INodeCredentialTestResult> {
	try {
		const { target, uri } = hostFromCredentials(credential.data ?? {});
		const versions = await withSsh(target, (ssh) => virshVersion(ssh, uri));
		const hypervisor = versions.hypervisor ? `, ${versions.hypervisor} ${versions.hypervisorVersion ?? ''}`.trimEnd() : '';
		return { status: 'OK', message: `Connected to ${uri}: libvirt ${versions.libvirt ?? 'unknown'}${hypervisor}` };
	} catch (error) {
		return { status: 'Error', message: (error as Error).message };
	}
}

import { NodeOperationError, type INode } from 'n8n-workflow';
import { isLibvirtBackupError } from '../../lib/errors';

/** Engine errors become NodeOperationErrors carrying the item index and the engine's error code. */
export function toNodeError(node: INode, error: unknown, itemIndex: number): NodeOperationError {
	if (error instanceof NodeOperationError) return error;
	const message = error instanceof Error ? error.message : String(error);
	return new NodeOperationError(node, message, {
		itemIndex,
		description: isLibvirtBackupError(error) ? `Error code: ${error.code}` : undefined,
	});
}

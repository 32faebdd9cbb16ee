/**
 * How big an archive n8n's binary data store can take, from the settings n8n 2.41 reads
 * (packages/core/src/binary-data/binary-data.config.ts): N8N_DEFAULT_BINARY_DATA_MODE, by default
 * `filesystem`, or `database` when EXECUTIONS_MODE=queue. A node cannot ask n8n which mode it runs
 * in, so it reads the same environment.
 * - filesystem (and s3/azure): n8n writes the stream to its store as it comes: no size limit here
 *   but the free space there.
 * - database: n8n's DatabaseManager buffers the WHOLE stream in memory, then refuses it above
 *   N8N_BINARY_DATA_DATABASE_MAX_FILE_SIZE MiB (default 512, at most 1024).
 * - default (in memory): n8n buffers the whole stream and keeps it as one base64 string, which V8
 *   caps at MAX_STRING_LENGTH characters (2^29 - 24 on 64-bit Node): 3/4 of that in bytes.
 */
import { constants as bufferConstants } from 'buffer';

export interface BinaryDataLimit {
	mode: string;
	/** Largest archive in bytes the mode can take; undefined when only free space limits it. */
	maxBytes?: number;
	/** Whether n8n holds the whole archive in its memory on the way (database, default). */
	buffered: boolean;
	/** Where the limit comes from, for error messages. */
	reason: string;
}

const MIB = 1024 * 1024;
const DEFAULT_DB_MAX_MIB = 512;

export function binaryDataLimit(env: Record<string, string | undefined>): BinaryDataLimit {
	const mode = env.N8N_DEFAULT_BINARY_DATA_MODE?.trim() || (env.EXECUTIONS_MODE === 'queue' ? 'database' : 'filesystem');
	if (mode === 'database') {
		const configured = Number(env.N8N_BINARY_DATA_DATABASE_MAX_FILE_SIZE);
		const mib = env.N8N_BINARY_DATA_DATABASE_MAX_FILE_SIZE && Number.isFinite(configured) ? configured : DEFAULT_DB_MAX_MIB;
		return {
			mode,
			maxBytes: mib * MIB,
			buffered: true,
			reason: `n8n stores binary data in its database (binary data mode "database"${env.EXECUTIONS_MODE === 'queue' ? ', which queue mode uses' : ''}), which takes at most ${mib} MiB per file (N8N_BINARY_DATA_DATABASE_MAX_FILE_SIZE, up to 1024)`,
		};
	}
	if (mode === 'default') {
		return {
			mode,
			maxBytes: Math.floor(bufferConstants.MAX_STRING_LENGTH / 4) * 3,
			buffered: true,
			reason: `n8n keeps binary data in memory (binary data mode "default") as one base64 string, which Node.js caps at ${bufferConstants.MAX_STRING_LENGTH} characters`,
		};
	}
	return { mode, buffered: false, reason: `binary data mode "${mode}" streams to storage` };
}

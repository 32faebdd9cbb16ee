// n8n's community-node rules in their self-hosted flavour: this package needs runtime
// dependencies (ssh2, tar-stream, fast-xml-parser), which n8n Cloud forbids, so
// no-runtime-dependencies is off; every other rule stays on for the package's code.
// Two scoped exceptions, both by design:
// - lib/ is the engine and knows nothing of n8n (ARCHITECTURE.md), so it cannot throw
//   NodeOperationError; the node layer wraps every engine error (nodes/shared/errors.ts).
// - test/ and bench/ start local processes (the lab, real n8n); they are not shipped.
import tseslint from 'typescript-eslint';
import { n8nCommunityNodesPlugin } from '@n8n/eslint-plugin-community-nodes';

const n8nRules = n8nCommunityNodesPlugin.configs.recommendedWithoutN8nCloudSupport;

export default tseslint.config(
	{ ignores: ['dist/**', 'node_modules/**', 'coverage/**', '**/*.js', '**/*.mjs'] },
	{ files: ['**/*.ts'], extends: [...tseslint.configs.recommended] },
	n8nRules,
	{ rules: { '@n8n/community-nodes/no-runtime-dependencies': 'off' } },
	{ files: ['lib/**/*.ts'], rules: { '@n8n/community-nodes/require-node-api-error': 'off' } },
	{
		files: ['test/**/*.ts', 'bench/**/*.ts'],
		rules: {
			'@n8n/community-nodes/no-dangerous-functions': 'off',
			'@n8n/community-nodes/require-node-api-error': 'off',
		},
	},
);

// Four layers: unit (pure, seconds, no lab), integration (real sshd + libvirtd lab), e2e (real n8n),
// faults (faults injected and hostile input against the lab and n8n; prints the Safety table).
const tsJest = ['ts-jest', { tsconfig: 'tsconfig.test.json', diagnostics: false }];
const common = { testEnvironment: 'node', transform: { '^.+\\.ts$': tsJest } };

module.exports = {
	reporters: ['default', '<rootDir>/test/support/summary-reporter.js'],
	projects: [
		{ ...common, displayName: 'unit', testMatch: ['<rootDir>/test/unit/**/*.test.ts'] },
		{
			...common,
			displayName: 'integration',
			testMatch: ['<rootDir>/test/integration/**/*.test.ts'],
			globalSetup: '<rootDir>/test/support/lab-setup.js',
		},
		{
			...common,
			displayName: 'e2e',
			testMatch: ['<rootDir>/test/e2e/**/*.test.ts'],
			globalSetup: '<rootDir>/test/support/lab-setup.js',
		},
		{
			...common,
			displayName: 'faults',
			testMatch: ['<rootDir>/test/faults/**/*.test.ts'],
			globalSetup: '<rootDir>/test/support/lab-setup.js',
		},
	],
};

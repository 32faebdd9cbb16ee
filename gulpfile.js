// Copies node and credential icons (and codex files) next to the compiled JavaScript in dist/.
const { src, dest, task } = require('gulp');

task('build:icons', () =>
	src(['nodes/**/*.{svg,png}', 'credentials/**/*.{svg,png}', 'nodes/**/*.node.json'], {
		base: '.',
		encoding: false,
	}).pipe(dest('dist')),
);

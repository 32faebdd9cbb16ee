import { criticalPath, type ExecSpan } from '../../lib/ssh';

const span = (startedMs: number, answeredMs?: number): ExecSpan => ({ label: `at ${startedMs}`, startedMs, answeredMs });

describe('criticalPath counts sequential round trips', () => {
	test.each<[string, ExecSpan[], number]>([
		['nothing run', [], 0],
		['one command', [span(0, 10)], 1],
		['three commands one after another', [span(0, 10), span(10, 20), span(25, 30)], 3],
		['three commands started together', [span(0, 10), span(1, 12), span(2, 9)], 1],
		['two together, then one after both', [span(0, 10), span(1, 12), span(12, 15)], 2],
		['one started while another still runs does not wait for it', [span(0, 100), span(5, 10), span(10, 20)], 2],
		['a held lock counts until its answer, not until it is released', [span(0, 5), span(6, 10), span(11, 12)], 3],
		['a command never answered ends no chain', [span(0), span(5, 10)], 1],
	])('%s', (_name, spans, expected) => {
		expect(criticalPath(spans)).toBe(expected);
	});
});

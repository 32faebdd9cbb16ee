import { type BackupRef, type RetentionPolicy, planRetention } from '../../../lib/retention';

/**
 * One VM's history over two years, newest first, like restic's snapshot_policy tests: dense in the
 * last days (several backups per hour and per day, a gap on 2026-11-27), sparser further back, and
 * dates around the 2025/2026 and 2024/2025 ISO-week year boundaries. Ids are the UTC times.
 */
const HISTORY = [
	'2026-11-30 22:00', '2026-11-30 09:15', '2026-11-30 09:00', '2026-11-30 08:30',
	'2026-11-29 23:00', '2026-11-29 01:00', '2026-11-28 12:00', '2026-11-26 12:00',
	'2026-11-25 12:00', '2026-11-23 03:00', '2026-11-22 20:00', '2026-11-20 12:00',
	'2026-11-15 12:00', '2026-11-08 12:00', '2026-11-01 12:00', '2026-10-31 12:00',
	'2026-10-20 12:00', '2026-10-05 12:00', '2026-09-30 12:00', '2026-09-01 12:00',
	'2026-08-15 12:00', '2026-07-15 12:00', '2026-07-01 12:00', '2026-06-10 12:00',
	'2026-05-20 12:00', '2026-04-01 12:00', '2026-03-15 12:00', '2026-02-01 12:00',
	'2026-01-10 12:00', '2026-01-01 00:30', '2025-12-31 23:30', '2025-12-28 12:00',
	'2025-11-10 12:00', '2025-10-10 12:00', '2025-08-01 12:00', '2025-06-15 12:00',
	'2025-04-04 12:00', '2025-02-14 12:00', '2025-01-01 10:00', '2024-12-30 12:00',
	'2024-12-15 12:00', '2024-11-20 12:00',
];
const NOW = new Date('2026-12-01T12:00:00Z');
const ALL = HISTORY;

function backup(id: string): BackupRef {
	return { id, vm: 'web', time: new Date(`${id.replace(' ', 'T')}:00Z`), kind: 'full' };
}

interface PolicyCase {
	name: string;
	policy: RetentionPolicy;
	/** Ids kept, newest first; the newest backup is always among them (it is the newest valid one). */
	kept: string[];
	/** Full reasons for a few interesting backups. */
	reasons: Record<string, string[]>;
}

/**
 * Expected results were derived independently from the PBS algorithm (prune.rs mark_selections)
 * and spot-checked by hand against the calendar.
 */
const CASES: PolicyCase[] = [
	{
		name: 'keep-last 1 keeps only the newest backup',
		policy: { keepLast: 1 },
		kept: ['2026-11-30 22:00'],
		reasons: {
			'2026-11-30 22:00': ['keep-last 1/1', 'newest valid backup'],
		},
	},
	{
		name: 'keep-last 3 keeps the three newest backups even when they share an hour',
		policy: { keepLast: 3 },
		kept: ['2026-11-30 22:00', '2026-11-30 09:15', '2026-11-30 09:00'],
		reasons: {
			'2026-11-30 09:00': ['keep-last 3/3'],
		},
	},
	{
		name: 'keep-last 10 keeps the ten newest backups regardless of the calendar',
		policy: { keepLast: 10 },
		kept: [
			'2026-11-30 22:00', '2026-11-30 09:15', '2026-11-30 09:00', '2026-11-30 08:30',
			'2026-11-29 23:00', '2026-11-29 01:00', '2026-11-28 12:00', '2026-11-26 12:00',
			'2026-11-25 12:00', '2026-11-23 03:00',
		],
		reasons: {
			'2026-11-23 03:00': ['keep-last 10/10'],
		},
	},
	{
		name: 'keep-last larger than the number of backups keeps all of them',
		policy: { keepLast: 100 },
		kept: ALL,
		reasons: {
			'2024-11-20 12:00': ['keep-last 42/100'],
		},
	},
	{
		name: 'keep-hourly 1 keeps the newest backup of the newest hour',
		policy: { keepHourly: 1 },
		kept: ['2026-11-30 22:00'],
		reasons: {
			'2026-11-30 22:00': ['keep-hourly (2026-11-30 22:00)', 'newest valid backup'],
		},
	},
	{
		name: 'keep-hourly keeps the newest backup of each of the last N hours that have backups',
		policy: { keepHourly: 3 },
		kept: ['2026-11-30 22:00', '2026-11-30 09:15', '2026-11-30 08:30'],
		reasons: {
			'2026-11-30 08:30': ['keep-hourly (2026-11-30 08:00)'],
		},
	},
	{
		name: 'keep-hourly skips hours without backups instead of spending a slot on them',
		policy: { keepHourly: 6 },
		kept: [
			'2026-11-30 22:00', '2026-11-30 09:15', '2026-11-30 08:30', '2026-11-29 23:00',
			'2026-11-29 01:00', '2026-11-28 12:00',
		],
		reasons: {
			'2026-11-28 12:00': ['keep-hourly (2026-11-28 12:00)'],
		},
	},
	{
		name: 'keep-daily 1 keeps the newest backup of the newest day',
		policy: { keepDaily: 1 },
		kept: ['2026-11-30 22:00'],
		reasons: {
			'2026-11-30 22:00': ['keep-daily (2026-11-30)', 'newest valid backup'],
		},
	},
	{
		name: 'keep-daily keeps the newest backup of each of the last N days that have backups',
		policy: { keepDaily: 3 },
		kept: ['2026-11-30 22:00', '2026-11-29 23:00', '2026-11-28 12:00'],
		reasons: {
			'2026-11-28 12:00': ['keep-daily (2026-11-28)'],
		},
	},
	{
		name: 'keep-daily spends no slot on a day without backups (2026-11-27)',
		policy: { keepDaily: 7 },
		kept: [
			'2026-11-30 22:00', '2026-11-29 23:00', '2026-11-28 12:00', '2026-11-26 12:00',
			'2026-11-25 12:00', '2026-11-23 03:00', '2026-11-22 20:00',
		],
		reasons: {
			'2026-11-22 20:00': ['keep-daily (2026-11-22)'],
		},
	},
	{
		name: 'keep-daily reaches back across months and years when backups are sparse',
		policy: { keepDaily: 30 },
		kept: [
			'2026-11-30 22:00', '2026-11-29 23:00', '2026-11-28 12:00', '2026-11-26 12:00',
			'2026-11-25 12:00', '2026-11-23 03:00', '2026-11-22 20:00', '2026-11-20 12:00',
			'2026-11-15 12:00', '2026-11-08 12:00', '2026-11-01 12:00', '2026-10-31 12:00',
			'2026-10-20 12:00', '2026-10-05 12:00', '2026-09-30 12:00', '2026-09-01 12:00',
			'2026-08-15 12:00', '2026-07-15 12:00', '2026-07-01 12:00', '2026-06-10 12:00',
			'2026-05-20 12:00', '2026-04-01 12:00', '2026-03-15 12:00', '2026-02-01 12:00',
			'2026-01-10 12:00', '2026-01-01 00:30', '2025-12-31 23:30', '2025-12-28 12:00',
			'2025-11-10 12:00', '2025-10-10 12:00',
		],
		reasons: {
			'2025-10-10 12:00': ['keep-daily (2025-10-10)'],
		},
	},
	{
		name: 'keep-weekly 1 keeps the newest backup of the newest ISO week',
		policy: { keepWeekly: 1 },
		kept: ['2026-11-30 22:00'],
		reasons: {
			'2026-11-30 22:00': ['keep-weekly (2026-W49)', 'newest valid backup'],
		},
	},
	{
		name: 'keep-weekly keeps the newest backup of each of the last N ISO weeks (Monday to Sunday)',
		policy: { keepWeekly: 3 },
		kept: ['2026-11-30 22:00', '2026-11-29 23:00', '2026-11-22 20:00'],
		reasons: {
			'2026-11-22 20:00': ['keep-weekly (2026-W47)'],
		},
	},
	{
		name: 'keep-weekly uses ISO week-numbering years: 2025-12-31 shares 2026-W01 with 2026-01-01, 2024-12-30 shares 2025-W01 with 2025-01-01',
		policy: { keepWeekly: 40 },
		kept: [
			'2026-11-30 22:00', '2026-11-29 23:00', '2026-11-22 20:00', '2026-11-15 12:00',
			'2026-11-08 12:00', '2026-11-01 12:00', '2026-10-20 12:00', '2026-10-05 12:00',
			'2026-09-30 12:00', '2026-09-01 12:00', '2026-08-15 12:00', '2026-07-15 12:00',
			'2026-07-01 12:00', '2026-06-10 12:00', '2026-05-20 12:00', '2026-04-01 12:00',
			'2026-03-15 12:00', '2026-02-01 12:00', '2026-01-10 12:00', '2026-01-01 00:30',
			'2025-12-28 12:00', '2025-11-10 12:00', '2025-10-10 12:00', '2025-08-01 12:00',
			'2025-06-15 12:00', '2025-04-04 12:00', '2025-02-14 12:00', '2025-01-01 10:00',
			'2024-12-15 12:00', '2024-11-20 12:00',
		],
		reasons: {
			'2026-01-01 00:30': ['keep-weekly (2026-W01)'],
			'2025-01-01 10:00': ['keep-weekly (2025-W01)'],
		},
	},
	{
		name: 'keep-monthly 1 keeps the newest backup of the newest month',
		policy: { keepMonthly: 1 },
		kept: ['2026-11-30 22:00'],
		reasons: {
			'2026-11-30 22:00': ['keep-monthly (2026-11)', 'newest valid backup'],
		},
	},
	{
		name: 'keep-monthly keeps the newest backup of each of the last N months that have backups',
		policy: { keepMonthly: 6 },
		kept: [
			'2026-11-30 22:00', '2026-10-31 12:00', '2026-09-30 12:00', '2026-08-15 12:00',
			'2026-07-15 12:00', '2026-06-10 12:00',
		],
		reasons: {
			'2026-06-10 12:00': ['keep-monthly (2026-06)'],
		},
	},
	{
		name: 'keep-monthly crosses the year boundary month by month',
		policy: { keepMonthly: 13 },
		kept: [
			'2026-11-30 22:00', '2026-10-31 12:00', '2026-09-30 12:00', '2026-08-15 12:00',
			'2026-07-15 12:00', '2026-06-10 12:00', '2026-05-20 12:00', '2026-04-01 12:00',
			'2026-03-15 12:00', '2026-02-01 12:00', '2026-01-10 12:00', '2025-12-31 23:30',
			'2025-11-10 12:00',
		],
		reasons: {
			'2025-11-10 12:00': ['keep-monthly (2025-11)'],
		},
	},
	{
		name: 'keep-monthly larger than the number of months keeps the newest backup of every month',
		policy: { keepMonthly: 30 },
		kept: [
			'2026-11-30 22:00', '2026-10-31 12:00', '2026-09-30 12:00', '2026-08-15 12:00',
			'2026-07-15 12:00', '2026-06-10 12:00', '2026-05-20 12:00', '2026-04-01 12:00',
			'2026-03-15 12:00', '2026-02-01 12:00', '2026-01-10 12:00', '2025-12-31 23:30',
			'2025-11-10 12:00', '2025-10-10 12:00', '2025-08-01 12:00', '2025-06-15 12:00',
			'2025-04-04 12:00', '2025-02-14 12:00', '2025-01-01 10:00', '2024-12-30 12:00',
			'2024-11-20 12:00',
		],
		reasons: {
			'2024-11-20 12:00': ['keep-monthly (2024-11)'],
		},
	},
	{
		name: 'keep-yearly 1 keeps the newest backup of the newest year',
		policy: { keepYearly: 1 },
		kept: ['2026-11-30 22:00'],
		reasons: {
			'2026-11-30 22:00': ['keep-yearly (2026)', 'newest valid backup'],
		},
	},
	{
		name: 'keep-yearly keeps the newest backup of each of the last N calendar years',
		policy: { keepYearly: 2 },
		kept: ['2026-11-30 22:00', '2025-12-31 23:30'],
		reasons: {
			'2025-12-31 23:30': ['keep-yearly (2025)'],
		},
	},
	{
		name: 'keep-yearly larger than the number of years keeps the newest backup of every year',
		policy: { keepYearly: 10 },
		kept: ['2026-11-30 22:00', '2025-12-31 23:30', '2024-12-30 12:00'],
		reasons: {
			'2024-12-30 12:00': ['keep-yearly (2024)'],
		},
	},
	{
		name: 'a day already covered by keep-last uses no keep-daily slot (PBS: later options only consider older backups)',
		policy: { keepLast: 3, keepDaily: 2 },
		kept: [
			'2026-11-30 22:00', '2026-11-30 09:15', '2026-11-30 09:00', '2026-11-29 23:00',
			'2026-11-28 12:00',
		],
		reasons: {
			'2026-11-28 12:00': ['keep-daily (2026-11-28)'],
		},
	},
	{
		name: 'keep-last 3 plus keep-daily 7 keeps the three newest plus seven further days',
		policy: { keepLast: 3, keepDaily: 7 },
		kept: [
			'2026-11-30 22:00', '2026-11-30 09:15', '2026-11-30 09:00', '2026-11-29 23:00',
			'2026-11-28 12:00', '2026-11-26 12:00', '2026-11-25 12:00', '2026-11-23 03:00',
			'2026-11-22 20:00', '2026-11-20 12:00',
		],
		reasons: {
			'2026-11-20 12:00': ['keep-daily (2026-11-20)'],
		},
	},
	{
		name: 'days covered by keep-hourly are skipped by keep-daily',
		policy: { keepHourly: 3, keepDaily: 3 },
		kept: [
			'2026-11-30 22:00', '2026-11-30 09:15', '2026-11-30 08:30', '2026-11-29 23:00',
			'2026-11-28 12:00', '2026-11-26 12:00',
		],
		reasons: {
			'2026-11-26 12:00': ['keep-daily (2026-11-26)'],
		},
	},
	{
		name: 'keep-weekly counts only weeks older than those keep-daily already covered',
		policy: { keepDaily: 3, keepWeekly: 2 },
		kept: [
			'2026-11-30 22:00', '2026-11-29 23:00', '2026-11-28 12:00', '2026-11-22 20:00',
			'2026-11-15 12:00',
		],
		reasons: {
			'2026-11-15 12:00': ['keep-weekly (2026-W46)'],
		},
	},
	{
		name: 'a 7 daily / 4 weekly / 6 monthly scheme keeps each tier beyond the previous one',
		policy: { keepDaily: 7, keepWeekly: 4, keepMonthly: 6 },
		kept: [
			'2026-11-30 22:00', '2026-11-29 23:00', '2026-11-28 12:00', '2026-11-26 12:00',
			'2026-11-25 12:00', '2026-11-23 03:00', '2026-11-22 20:00', '2026-11-15 12:00',
			'2026-11-08 12:00', '2026-11-01 12:00', '2026-10-20 12:00', '2026-09-30 12:00',
			'2026-08-15 12:00', '2026-07-15 12:00', '2026-06-10 12:00', '2026-05-20 12:00',
			'2026-04-01 12:00',
		],
		reasons: {
			'2026-04-01 12:00': ['keep-monthly (2026-04)'],
		},
	},
	{
		name: 'a grandfather-father-son scheme with yearly backups keeps one backup per year at the far end',
		policy: { keepDaily: 7, keepWeekly: 4, keepMonthly: 12, keepYearly: 3 },
		kept: [
			'2026-11-30 22:00', '2026-11-29 23:00', '2026-11-28 12:00', '2026-11-26 12:00',
			'2026-11-25 12:00', '2026-11-23 03:00', '2026-11-22 20:00', '2026-11-15 12:00',
			'2026-11-08 12:00', '2026-11-01 12:00', '2026-10-20 12:00', '2026-09-30 12:00',
			'2026-08-15 12:00', '2026-07-15 12:00', '2026-06-10 12:00', '2026-05-20 12:00',
			'2026-04-01 12:00', '2026-03-15 12:00', '2026-02-01 12:00', '2026-01-10 12:00',
			'2025-12-31 23:30', '2025-11-10 12:00', '2025-10-10 12:00', '2024-12-30 12:00',
		],
		reasons: {
			'2024-12-30 12:00': ['keep-yearly (2024)'],
		},
	},
	{
		name: 'every counted rule together, each extending past the one before',
		policy: { keepLast: 1, keepHourly: 2, keepDaily: 2, keepWeekly: 2, keepMonthly: 2, keepYearly: 2 },
		kept: [
			'2026-11-30 22:00', '2026-11-30 09:15', '2026-11-30 08:30', '2026-11-29 23:00',
			'2026-11-28 12:00', '2026-11-22 20:00', '2026-11-15 12:00', '2026-10-31 12:00',
			'2026-09-30 12:00', '2025-12-31 23:30', '2024-12-30 12:00',
		],
		reasons: {
			'2024-12-30 12:00': ['keep-yearly (2024)'],
		},
	},
	{
		name: 'keep-monthly skips months already covered by keep-weekly',
		policy: { keepWeekly: 2, keepMonthly: 3 },
		kept: [
			'2026-11-30 22:00', '2026-11-29 23:00', '2026-10-31 12:00', '2026-09-30 12:00',
			'2026-08-15 12:00',
		],
		reasons: {
			'2026-08-15 12:00': ['keep-monthly (2026-08)'],
		},
	},
	{
		name: 'keep-yearly skips years already covered by keep-monthly',
		policy: { keepMonthly: 3, keepYearly: 3 },
		kept: [
			'2026-11-30 22:00', '2026-10-31 12:00', '2026-09-30 12:00', '2025-12-31 23:30',
			'2024-12-30 12:00',
		],
		reasons: {
			'2024-12-30 12:00': ['keep-yearly (2024)'],
		},
	},
	{
		name: 'a count of 0 disables that rule',
		policy: { keepLast: 0, keepDaily: 2 },
		kept: ['2026-11-30 22:00', '2026-11-29 23:00'],
		reasons: {
			'2026-11-29 23:00': ['keep-daily (2026-11-29)'],
		},
	},
	{
		name: 'keep-within 1d keeps everything newer than 24 hours before now',
		policy: { keepWithin: '1d' },
		kept: ['2026-11-30 22:00'],
		reasons: {
			'2026-11-30 22:00': ['keep-within 1d', 'newest valid backup'],
		},
	},
	{
		name: 'keep-within 36h keeps everything newer than 36 hours before now',
		policy: { keepWithin: '36h' },
		kept: ['2026-11-30 22:00', '2026-11-30 09:15', '2026-11-30 09:00', '2026-11-30 08:30'],
		reasons: {
			'2026-11-30 08:30': ['keep-within 36h'],
		},
	},
	{
		name: 'a compound duration 1d12h means the same as 36h',
		policy: { keepWithin: '1d12h' },
		kept: ['2026-11-30 22:00', '2026-11-30 09:15', '2026-11-30 09:00', '2026-11-30 08:30'],
		reasons: {
			'2026-11-30 08:30': ['keep-within 1d12h'],
		},
	},
	{
		name: 'keep-within 1w keeps the last seven days',
		policy: { keepWithin: '1w' },
		kept: [
			'2026-11-30 22:00', '2026-11-30 09:15', '2026-11-30 09:00', '2026-11-30 08:30',
			'2026-11-29 23:00', '2026-11-29 01:00', '2026-11-28 12:00', '2026-11-26 12:00',
			'2026-11-25 12:00',
		],
		reasons: {
			'2026-11-25 12:00': ['keep-within 1w'],
		},
	},
	{
		name: 'keep-within 2w keeps the last fourteen days',
		policy: { keepWithin: '2w' },
		kept: [
			'2026-11-30 22:00', '2026-11-30 09:15', '2026-11-30 09:00', '2026-11-30 08:30',
			'2026-11-29 23:00', '2026-11-29 01:00', '2026-11-28 12:00', '2026-11-26 12:00',
			'2026-11-25 12:00', '2026-11-23 03:00', '2026-11-22 20:00', '2026-11-20 12:00',
		],
		reasons: {
			'2026-11-20 12:00': ['keep-within 2w'],
		},
	},
	{
		name: 'keep-within 1m goes back one calendar month and excludes a backup exactly at the cutoff',
		policy: { keepWithin: '1m' },
		kept: [
			'2026-11-30 22:00', '2026-11-30 09:15', '2026-11-30 09:00', '2026-11-30 08:30',
			'2026-11-29 23:00', '2026-11-29 01:00', '2026-11-28 12:00', '2026-11-26 12:00',
			'2026-11-25 12:00', '2026-11-23 03:00', '2026-11-22 20:00', '2026-11-20 12:00',
			'2026-11-15 12:00', '2026-11-08 12:00',
		],
		reasons: {
			'2026-11-08 12:00': ['keep-within 1m'],
		},
	},
	{
		name: 'keep-within 1y goes back one calendar year',
		policy: { keepWithin: '1y' },
		kept: [
			'2026-11-30 22:00', '2026-11-30 09:15', '2026-11-30 09:00', '2026-11-30 08:30',
			'2026-11-29 23:00', '2026-11-29 01:00', '2026-11-28 12:00', '2026-11-26 12:00',
			'2026-11-25 12:00', '2026-11-23 03:00', '2026-11-22 20:00', '2026-11-20 12:00',
			'2026-11-15 12:00', '2026-11-08 12:00', '2026-11-01 12:00', '2026-10-31 12:00',
			'2026-10-20 12:00', '2026-10-05 12:00', '2026-09-30 12:00', '2026-09-01 12:00',
			'2026-08-15 12:00', '2026-07-15 12:00', '2026-07-01 12:00', '2026-06-10 12:00',
			'2026-05-20 12:00', '2026-04-01 12:00', '2026-03-15 12:00', '2026-02-01 12:00',
			'2026-01-10 12:00', '2026-01-01 00:30', '2025-12-31 23:30', '2025-12-28 12:00',
		],
		reasons: {
			'2025-12-28 12:00': ['keep-within 1y'],
		},
	},
	{
		name: 'keep-within 2y keeps everything newer than two years',
		policy: { keepWithin: '2y' },
		kept: [
			'2026-11-30 22:00', '2026-11-30 09:15', '2026-11-30 09:00', '2026-11-30 08:30',
			'2026-11-29 23:00', '2026-11-29 01:00', '2026-11-28 12:00', '2026-11-26 12:00',
			'2026-11-25 12:00', '2026-11-23 03:00', '2026-11-22 20:00', '2026-11-20 12:00',
			'2026-11-15 12:00', '2026-11-08 12:00', '2026-11-01 12:00', '2026-10-31 12:00',
			'2026-10-20 12:00', '2026-10-05 12:00', '2026-09-30 12:00', '2026-09-01 12:00',
			'2026-08-15 12:00', '2026-07-15 12:00', '2026-07-01 12:00', '2026-06-10 12:00',
			'2026-05-20 12:00', '2026-04-01 12:00', '2026-03-15 12:00', '2026-02-01 12:00',
			'2026-01-10 12:00', '2026-01-01 00:30', '2025-12-31 23:30', '2025-12-28 12:00',
			'2025-11-10 12:00', '2025-10-10 12:00', '2025-08-01 12:00', '2025-06-15 12:00',
			'2025-04-04 12:00', '2025-02-14 12:00', '2025-01-01 10:00', '2024-12-30 12:00',
			'2024-12-15 12:00',
		],
		reasons: {
			'2024-12-15 12:00': ['keep-within 2y'],
		},
	},
	{
		name: 'retention days 1 keeps the last 24 hours',
		policy: { retentionDays: 1 },
		kept: ['2026-11-30 22:00'],
		reasons: {
			'2026-11-30 22:00': ['retention-days 1', 'newest valid backup'],
		},
	},
	{
		name: 'retention days 7 is the legacy form of keep-within 7d',
		policy: { retentionDays: 7 },
		kept: [
			'2026-11-30 22:00', '2026-11-30 09:15', '2026-11-30 09:00', '2026-11-30 08:30',
			'2026-11-29 23:00', '2026-11-29 01:00', '2026-11-28 12:00', '2026-11-26 12:00',
			'2026-11-25 12:00',
		],
		reasons: {
			'2026-11-25 12:00': ['retention-days 7'],
		},
	},
	{
		name: 'retention days 30 keeps the last 30 days',
		policy: { retentionDays: 30 },
		kept: [
			'2026-11-30 22:00', '2026-11-30 09:15', '2026-11-30 09:00', '2026-11-30 08:30',
			'2026-11-29 23:00', '2026-11-29 01:00', '2026-11-28 12:00', '2026-11-26 12:00',
			'2026-11-25 12:00', '2026-11-23 03:00', '2026-11-22 20:00', '2026-11-20 12:00',
			'2026-11-15 12:00', '2026-11-08 12:00',
		],
		reasons: {
			'2026-11-08 12:00': ['retention-days 30'],
		},
	},
	{
		name: 'retention days longer than the history keeps everything',
		policy: { retentionDays: 1000 },
		kept: ALL,
		reasons: {
			'2024-11-20 12:00': ['retention-days 1000'],
		},
	},
	{
		name: 'keep-within stands apart from the counted rules: keep-monthly still counts the month it covers',
		policy: { keepWithin: '3d', keepMonthly: 3 },
		kept: [
			'2026-11-30 22:00', '2026-11-30 09:15', '2026-11-30 09:00', '2026-11-30 08:30',
			'2026-11-29 23:00', '2026-11-29 01:00', '2026-10-31 12:00', '2026-09-30 12:00',
		],
		reasons: {
			'2026-09-30 12:00': ['keep-monthly (2026-09)'],
		},
	},
	{
		name: 'retention days combine with keep-weekly, both reasons recorded',
		policy: { retentionDays: 7, keepWeekly: 4 },
		kept: [
			'2026-11-30 22:00', '2026-11-30 09:15', '2026-11-30 09:00', '2026-11-30 08:30',
			'2026-11-29 23:00', '2026-11-29 01:00', '2026-11-28 12:00', '2026-11-26 12:00',
			'2026-11-25 12:00', '2026-11-22 20:00', '2026-11-15 12:00',
		],
		reasons: {
			'2026-11-29 23:00': ['keep-weekly (2026-W48)', 'retention-days 7'],
			'2026-11-15 12:00': ['keep-weekly (2026-W46)'],
		},
	},
	{
		name: 'keep-last and keep-within both apply, each adding its reason',
		policy: { keepLast: 2, keepWithin: '2d' },
		kept: [
			'2026-11-30 22:00', '2026-11-30 09:15', '2026-11-30 09:00', '2026-11-30 08:30',
			'2026-11-29 23:00',
		],
		reasons: {
			'2026-11-30 09:15': ['keep-last 2/2', 'keep-within 2d'],
			'2026-11-29 23:00': ['keep-within 2d'],
		},
	},
];

describe('planRetention over a fixed two-year history (UTC)', () => {
	test.each(CASES)('$name', ({ policy, kept, reasons }) => {
		const plan = planRetention(HISTORY.map(backup), policy, NOW, 'UTC');

		const keptIds = plan.decisions.filter((d) => d.action === 'keep').map((d) => d.id);
		expect(keptIds).toEqual(kept);
		const byId = new Map(plan.decisions.map((d) => [d.id, d]));
		for (const [id, expected] of Object.entries(reasons)) {
			expect(byId.get(id)?.reasons).toEqual(expected);
		}
		for (const decision of plan.decisions.filter((d) => d.action === 'prune')) {
			expect(decision.reasons).toEqual(['matched no rule']);
		}
	});

	test('returns one decision per backup, in input order, whatever the input order is', () => {
		const shuffled = [...HISTORY].reverse().map(backup);
		const plan = planRetention(shuffled, { keepDaily: 7 }, NOW, 'UTC');

		expect(plan.decisions.map((d) => d.id)).toEqual(shuffled.map((b) => b.id));
		const sorted = planRetention(HISTORY.map(backup), { keepDaily: 7 }, NOW, 'UTC');
		const keptOf = (p: typeof plan) => new Set(p.decisions.filter((d) => d.action === 'keep').map((d) => d.id));
		expect(keptOf(plan)).toEqual(keptOf(sorted));
	});

	test('a decision carries the backup id, vm and time', () => {
		const [first] = planRetention([backup('2026-11-30 22:00')], { keepLast: 1 }, NOW).decisions;

		expect(first).toEqual({
			id: '2026-11-30 22:00',
			vm: 'web',
			time: new Date('2026-11-30T22:00:00Z'),
			action: 'keep',
			reasons: ['keep-last 1/1', 'newest valid backup'],
		});
	});
});

/**
 * Re-reads backup images on the host: sha256 of every image and `qemu-img check` of every qcow2,
 * for any number of images in one SSH command (a few at a time, in parallel, printed in order).
 */
import { LibvirtBackupError } from '../errors';
import { newMarker, splitSections } from '../batch';
import { scriptArgv } from '../shell';
import type { SshConnection } from '../ssh';
import type { QemuImgCheck } from '../store/verification';

/**
 * `sh -c CHECK_SCRIPT lvb-check MARKER [PATH FORMAT]...`. sha256sum reads the image from stdin,
 * so its output never has to escape a file name. An image is 'missing' only when stat says ENOENT
 * (any other stat failure, e.g. EACCES on the folder, is 'unreadable'), and a failed open or read
 * keeps its error text, so the caller can tell damage from a read error. qemu-img check exit codes:
 * 0 clean, 1 check not completed, 2 corruptions, 3 only leaked clusters, 63 format without checks.
 */
export const CHECK_SCRIPT = `export LC_ALL=C
m=$1; shift
command -v sha256sum >/dev/null 2>&1 || { echo "$m nosha"; exit 0; }
qi=1; command -v qemu-img >/dev/null 2>&1 || qi=0
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'rm -rf "$tmp"; exit 143' TERM
jobs=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
[ "$jobs" -gt 4 ] && jobs=4
i=0
while [ $# -ge 2 ]; do
  p=$1 f=$2; shift 2
  (
    if [ -L "$p" ]; then echo symlink >"$tmp/$i.state"
    elif [ ! -e "$p" ]; then
      if stat -c %F -- "$p" >"$tmp/$i.out" 2>&1; then echo unreadable
      else case $(cat "$tmp/$i.out") in *'No such file or directory'*) echo missing;; *) echo unreadable;; esac
      fi >"$tmp/$i.state"
    elif [ ! -f "$p" ]; then echo notfile >"$tmp/$i.state"
    elif ! sha256sum 2>"$tmp/$i.out" <"$p" >"$tmp/$i.sha"; then echo unreadable >"$tmp/$i.state"
    else
      echo read >"$tmp/$i.state"
      if [ "$f" != qcow2 ]; then echo format >"$tmp/$i.rc"
      elif [ "$qi" = 0 ]; then echo noqemuimg >"$tmp/$i.rc"
      else qemu-img check -U -f qcow2 "$p" >"$tmp/$i.out" 2>&1; echo $? >"$tmp/$i.rc"
      fi
    fi
  ) &
  i=$((i+1))
  [ $((i % jobs)) -eq 0 ] && wait
done
wait
j=0
while [ "$j" -lt "$i" ]; do
  echo "$m image $j"
  echo "state $(cat "$tmp/$j.state" 2>/dev/null)"
  echo "sha $(cut -c1-64 "$tmp/$j.sha" 2>/dev/null)"
  echo "check $(cat "$tmp/$j.rc" 2>/dev/null)"
  cat "$tmp/$j.out" 2>/dev/null
  j=$((j+1))
done
echo "$m end"
`;

export interface ImageRequest {
	path: string;
	format: string;
}

export interface ImageResult {
	/**
	 * Whether the file could be read, or why not: missing (ENOENT), symlink and notfile say the
	 * regular file our writer left is no longer there; unreadable is a failed stat, open or read.
	 */
	state: 'read' | 'missing' | 'symlink' | 'notfile' | 'unreadable';
	/** null when not read, or when the hash could not be read back. */
	sha256: string | null;
	qemuImgCheck: QemuImgCheck;
	/** qemu-img's own words (last lines), or why the check was skipped or the read failed. */
	detail: string;
}

const MAX_ARGS_BYTES = 96 * 1024;

export async function checkImages(ssh: SshConnection, images: readonly ImageRequest[], signal?: AbortSignal): Promise<Map<string, ImageResult>> {
	const results = new Map<string, ImageResult>();
	let start = 0;
	while (start < images.length) {
		let bytes = 0;
		let end = start;
		while (end < images.length && (end === start || bytes + Buffer.byteLength(images[end].path) + 16 <= MAX_ARGS_BYTES)) {
			bytes += Buffer.byteLength(images[end].path) + 16;
			end += 1;
		}
		const batch = images.slice(start, end);
		const marker = newMarker();
		const { stdout } = await ssh.run(scriptArgv(CHECK_SCRIPT, 'lvb-check', [marker, ...batch.flatMap((image) => [image.path, image.format])]), {
			label: 'sha256sum / qemu-img check',
			signal,
		});
		parseCheckOutput(stdout, marker, batch).forEach((result, index) => results.set(batch[index].path, result));
		start = end;
	}
	return results;
}

export function parseCheckOutput(stdout: string, marker: string, batch: readonly ImageRequest[]): ImageResult[] {
	const sections = splitSections(stdout, marker);
	if (sections.some((section) => section.kind === 'nosha')) {
		throw new LibvirtBackupError('COMMAND_FAILED', 'sha256sum not found on the host: install coreutils');
	}
	if (!sections.some((section) => section.kind === 'end')) {
		throw new LibvirtBackupError('PARSE_ERROR', 'The image check ended early (no end marker): the output is incomplete');
	}
	const byIndex = new Map(sections.filter((section) => section.kind === 'image').map((section) => [Number(section.arg), section.body]));
	return batch.map((image, index) => {
		const body = byIndex.get(index);
		if (body === undefined) throw new LibvirtBackupError('PARSE_ERROR', `The image check printed nothing for ${image.path}`);
		return parseImageSection(body);
	});
}

function parseImageSection(body: string): ImageResult {
	const [stateLine = '', shaLine = '', checkLine = '', ...rest] = body.split('\n');
	const output = rest.join('\n').trim();
	const state = stateLine.replace(/^state /, '') as ImageResult['state'];
	const sha = shaLine.replace(/^sha /, '');
	const rc = checkLine.replace(/^check /, '');
	const unreadable: Record<string, string> = {
		missing: 'image file is missing',
		symlink: 'image is a symbolic link (never followed)',
		notfile: 'image is not a regular file',
		unreadable: `image cannot be read: ${lastLines(output)}`,
	};
	if (state !== 'read') {
		const known = Object.hasOwn(unreadable, state);
		return { state: known ? state : 'unreadable', sha256: null, qemuImgCheck: 'skipped', detail: known ? unreadable[state] : 'image was not checked' };
	}
	const sha256 = /^[0-9a-f]{64}$/.test(sha) ? sha : null;
	switch (rc) {
		case '0':
			return { state, sha256, qemuImgCheck: 'ok', detail: '' };
		case '3':
			return { state, sha256, qemuImgCheck: 'ok', detail: `qemu-img check: leaked clusters only, no data affected (${lastLines(output)})` };
		case 'format':
			return { state, sha256, qemuImgCheck: 'skipped', detail: '' };
		case 'noqemuimg':
			return { state, sha256, qemuImgCheck: 'skipped', detail: 'qemu-img not found on the host (install qemu-utils / qemu-img): structure not checked' };
		case '63':
			return { state, sha256, qemuImgCheck: 'skipped', detail: 'qemu-img cannot check this format' };
		case '2':
			return { state, sha256, qemuImgCheck: 'errors', detail: `qemu-img check failed (exit code 2): ${lastLines(output)}` };
		default:
			return { state, sha256, qemuImgCheck: 'incomplete', detail: `qemu-img check could not complete (exit code ${rc || 'unknown'}): ${lastLines(output)}` };
	}
}

function lastLines(text: string): string {
	return text.trim().split('\n').slice(-4).join(' | ') || 'no output';
}

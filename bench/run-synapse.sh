#!/usr/bin/env bash
# Start a fresh, benchmark-configured Synapse on loopback.
#
#   bench/run-synapse.sh install            # only create target/synapse-venv and install Synapse
#   bench/run-synapse.sh PORT [DIR]         # generate a config in DIR (default: a new temp dir)
#                                           # and run Synapse in the foreground (exec: same PID)
#
# Environment: SERVER_NAME (default localhost:PORT), SHARED_SECRET (default bench-shared-secret),
# SYNAPSE_VERSION (default '1.163.*'), SYNC_CACHE (Synapse's caches.sync_response_cache_duration,
# default 0 so that repeated identical initial syncs are computed, not served from the 2-minute
# response cache).
#
# Config: SQLite, client API only on 127.0.0.1:PORT (plain HTTP, no federation listener), open
# registration without verification, registration_shared_secret, every rc_* rate limit very
# high, bcrypt_rounds 4, no stats/metrics/URL previews, no trusted key servers.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV="$ROOT/target/synapse-venv"
PY="$VENV/bin/python"
SYNAPSE_VERSION=${SYNAPSE_VERSION:-'1.163.*'}

install_synapse() {
    if [ -x "$PY" ] && "$PY" -c 'import synapse' 2>/dev/null; then
        return 0
    fi
    echo "installing matrix-synapse==$SYNAPSE_VERSION into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "matrix-synapse==$SYNAPSE_VERSION" \
        || "$VENV/bin/pip" install -q matrix-synapse
}

if [ "${1:-}" = "install" ]; then
    install_synapse
    "$PY" -c 'import synapse; print("synapse", synapse.__version__)'
    exit 0
fi

PORT=${1:?usage: run-synapse.sh PORT [DIR] | run-synapse.sh install}
DIR=${2:-$(mktemp -d /tmp/synapse-bench.XXXXXX)}
SERVER_NAME=${SERVER_NAME:-localhost:$PORT}
SHARED_SECRET=${SHARED_SECRET:-bench-shared-secret}
SYNC_CACHE=${SYNC_CACHE:-0}
mkdir -p "$DIR"
install_synapse

"$PY" -m synapse.app.homeserver --server-name "$SERVER_NAME" \
    --config-path "$DIR/homeserver.yaml" --data-directory "$DIR" \
    --generate-config --report-stats=no >/dev/null

PORT="$PORT" DIR="$DIR" SHARED_SECRET="$SHARED_SECRET" SYNC_CACHE="$SYNC_CACHE" "$PY" - <<'PYEOF'
import os, yaml
path = os.path.join(os.environ["DIR"], "homeserver.yaml")
with open(path) as f:
    c = yaml.safe_load(f)
port = int(os.environ["PORT"])
c["listeners"] = [{
    "port": port, "type": "http", "tls": False, "bind_addresses": ["127.0.0.1"],
    "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}],
}]
c["enable_registration"] = True
c["enable_registration_without_verification"] = True
c["registration_shared_secret"] = os.environ["SHARED_SECRET"]
c["bcrypt_rounds"] = 4
c["report_stats"] = False
c["enable_metrics"] = False
c["url_preview_enabled"] = False
c["trusted_key_servers"] = []
c["suppress_key_server_warning"] = True
c["caches"] = {"sync_response_cache_duration": os.environ["SYNC_CACHE"]}
hi = {"per_second": 100000, "burst_count": 100000}
for k in ["rc_message", "rc_registration", "rc_registration_token_validity",
          "rc_admin_redaction", "rc_joins_per_room", "rc_key_requests", "rc_3pid_validation",
          "rc_third_party_invite", "rc_media_create", "rc_delayed_event_mgmt",
          "rc_room_creation", "rc_reports", "rc_user_directory", "rc_profile"]:
    c[k] = dict(hi)
c["rc_login"] = {"address": dict(hi), "account": dict(hi), "failed_attempts": dict(hi)}
c["rc_joins"] = {"local": dict(hi), "remote": dict(hi)}
c["rc_invites"] = {"per_room": dict(hi), "per_user": dict(hi), "per_issuer": dict(hi)}
c["rc_presence"] = {"per_user": dict(hi)}
c["rc_federation"] = {"window_size": 1000, "sleep_limit": 100000, "sleep_delay": 1,
                      "reject_limit": 100000, "concurrent": 100000}
with open(path, "w") as f:
    yaml.safe_dump(c, f, sort_keys=False)
PYEOF

echo "synapse: config $DIR/homeserver.yaml, listening on 127.0.0.1:$PORT as $SERVER_NAME" >&2
exec "$PY" -m synapse.app.homeserver --config-path "$DIR/homeserver.yaml"

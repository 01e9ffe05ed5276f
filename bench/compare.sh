#!/usr/bin/env bash
# Ganglion vs Synapse under the same load generator, one after the other, REPEATS times each
# (interleaved: ganglion, synapse, ganglion, synapse, ...), each run on a fresh server with a fresh
# temporary data dir. Prints the medians side by side and `uptime`.
#
#   bench/compare.sh [extra ganglion-bench args...]      e.g. bench/compare.sh --messages 50
#
# Environment:
#   PORT (18008)          loopback port both servers listen on (one at a time)
#   REPEATS (3)           runs per server
#   SERVERS ("ganglion synapse")   which servers to run
#   OUT (new temp dir)    where raw outputs and server logs are kept
#   CARGO_TARGET_DIR      target dir for the ganglion release build (default: target/)
#   GANGLION_BIN          use this ganglion binary instead of building one
# Loopback only; every wait is bounded.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PORT=${PORT:-18008}
REPEATS=${REPEATS:-3}
SERVERS=${SERVERS:-ganglion synapse}
OUT=${OUT:-$(mktemp -d /tmp/ganglion-bench.XXXXXX)}
mkdir -p "$OUT"
BENCH="$ROOT/bench/target/release/ganglion-bench"
BASE="http://127.0.0.1:$PORT"

echo "== uptime (start): $(uptime)"
echo "== raw output in $OUT"

(cd "$ROOT/bench" && CARGO_TARGET_DIR="$ROOT/bench/target" cargo build --release --quiet)
if [[ " $SERVERS " == *" ganglion "* ]] && [ -z "${GANGLION_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release --quiet --bin ganglion)
    TD=${CARGO_TARGET_DIR:-target}
    [[ "$TD" = /* ]] || TD="$ROOT/$TD"
    GANGLION_BIN="$TD/release/ganglion"
fi
if [[ " $SERVERS " == *" synapse "* ]]; then
    "$ROOT/bench/run-synapse.sh" install
fi

SERVER_PID=""
SERVER_DIR=""
stop_server() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
    if [ -n "$SERVER_DIR" ]; then rm -rf "$SERVER_DIR"; fi
    SERVER_DIR=""
}
trap stop_server EXIT

start_server() { # $1 = ganglion|synapse, $2 = log file
    if curl -s -o /dev/null -m 2 "$BASE/_matrix/client/versions"; then
        echo "something already listens on $BASE; refusing" >&2
        return 1
    fi
    SERVER_DIR=$(mktemp -d /tmp/bench-server.XXXXXX)
    case "$1" in
    ganglion)
        mkdir -p "$SERVER_DIR/data"
        cat > "$SERVER_DIR/ganglion.toml" <<TOML
server_name = "localhost:$PORT"
data_dir = "$SERVER_DIR/data"
[client]
listen = "127.0.0.1:$PORT"
[database]
url = "sqlite://$SERVER_DIR/data/ganglion.db"
TOML
        "$GANGLION_BIN" --config "$SERVER_DIR/ganglion.toml" >"$2" 2>&1 &
        SERVER_PID=$!
        ;;
    synapse)
        SERVER_NAME="localhost:$PORT" "$ROOT/bench/run-synapse.sh" "$PORT" "$SERVER_DIR" >"$2" 2>&1 &
        SERVER_PID=$! # run-synapse.sh execs Synapse: same PID
        ;;
    esac
    for _ in $(seq 240); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "$1 exited during start-up; see $2" >&2
            return 1
        fi
        if curl -sf -o /dev/null -m 2 "$BASE/_matrix/client/versions"; then
            sleep 2 # settle, so the "before" RSS is idle
            return 0
        fi
        sleep 0.5
    done
    echo "$1 not ready after 120 s; see $2" >&2
    return 1
}

for rep in $(seq "$REPEATS"); do
    for srv in $SERVERS; do
        echo "== $srv run $rep/$REPEATS"
        if start_server "$srv" "$OUT/$srv-$rep.log"; then
            timeout 3600 "$BENCH" --base "$BASE" --label "$srv" --pid "$SERVER_PID" "$@" \
                >"$OUT/$srv-$rep.out" 2>"$OUT/$srv-$rep.err" \
                || echo "   $srv run $rep: load generator exited non-zero (see $OUT/$srv-$rep.err)"
            grep -v '^{' "$OUT/$srv-$rep.out" | sed 's/^/   /' || true
        fi
        stop_server
    done
done

echo
echo "== medians of $REPEATS runs (uptime now: $(uptime))"
python3 - "$OUT" $SERVERS <<'PY'
import glob, json, os, statistics, sys
out, servers = sys.argv[1], sys.argv[2:]
runs = {s: [] for s in servers}
for path in sorted(glob.glob(os.path.join(out, "*.out"))):
    srv = os.path.basename(path).rsplit("-", 1)[0]
    for line in open(path):
        if line.startswith("{") and srv in runs:
            runs[srv].append(json.loads(line))
def get(d, path):
    for k in path.split("."):
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d
metrics = [
    ("send events/s", "send.events_per_s", True),
    ("send p50 ms", "send.latency.p50_ms", False),
    ("send p99 ms", "send.latency.p99_ms", False),
    ("send->sync p50 ms", "send_sync.latency.p50_ms", False),
    ("send->sync p99 ms", "send_sync.latency.p99_ms", False),
    ("initial sync first ms", "initial_sync.first_ms", False),
    ("initial sync p50 ms", "initial_sync.latency.p50_ms", False),
    ("initial sync p99 ms", "initial_sync.latency.p99_ms", False),
    ("initial sync KiB", "initial_sync.response_bytes", None),
    ("RSS before MB", "memory.before.rss_mb", False),
    ("RSS after MB", "memory.after.rss_mb", False),
    ("peak RSS MB", "memory.after.hwm_mb", False),
    ("RssAnon before MB", "memory.before.anon_mb", False),
    ("RssAnon after MB", "memory.after.anon_mb", False),
    ("429s", "rate_limited_429", None),
    ("send errors", "send.errors", None),
    ("send->sync missed", "send_sync.missed", None),
]
hdr = f"{'metric':<24}" + "".join(f"{s + ' (n=' + str(len(runs[s])) + ')':>20}" for s in servers)
if len(servers) == 2:
    hdr += f"{servers[0] + '/' + servers[1]:>22}"
print(hdr)
summary = {}
for name, path, higher_better in metrics:
    meds = []
    for s in servers:
        vals = [v for v in (get(r, path) for r in runs[s]) if isinstance(v, (int, float))]
        if name == "initial sync KiB":
            vals = [v / 1024 for v in vals]
        meds.append(statistics.median(vals) if vals else None)
    summary[name] = dict(zip(servers, meds))
    row = f"{name:<24}" + "".join(f"{m:>20.1f}" if m is not None else f"{'-':>20}" for m in meds)
    if len(servers) == 2 and None not in meds and meds[1]:
        row += f"{meds[0] / meds[1]:>22.2f}"
    print(row)
print(json.dumps({"medians": summary, "repeats": {s: len(runs[s]) for s in servers}}))
PY
echo "== uptime (end): $(uptime)"

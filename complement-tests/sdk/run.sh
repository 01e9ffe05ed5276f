#!/usr/bin/env bash
# Run the real-client SDK flows (matrix-nio with E2EE, matrix-js-sdk with Rust crypto) against a
# running homeserver.
#
#   complement-tests/sdk/run.sh --base http://127.0.0.1:8008 [--base-b URL] [--only python|js] [--verbose]
#
# With --base-b, user B lives on that second server (federating with the first) and the Python
# flow checks what crosses federation, end-to-end encryption included.
#
# Sets up (once, and again when requirements.txt / package-lock.json change):
#   - a Python venv with matrix-nio[e2e] under target/sdk-venv
#   - node_modules under complement-tests/sdk/js (npm ci)
# then runs python/flow_nio.py and js/flow_jssdk.mjs. Each prints OK/FAIL/SKIP per step.
# Exits non-zero if any set-up step or any flow step fails, and says which.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
base=""
base_b=()
only=""
verbose=()
while [ $# -gt 0 ]; do
    case "$1" in
        --base) base="${2:-}"; shift 2 ;;
        --base=*) base="${1#--base=}"; shift ;;
        --base-b) base_b=(--base-b "${2:-}"); shift 2 ;;
        --only) only="${2:-}"; shift 2 ;;
        --only=*) only="${1#--only=}"; shift ;;
        --verbose) verbose=(--verbose); shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [ -z "$base" ]; then
    echo "usage: $0 --base http://127.0.0.1:PORT [--only python|js] [--verbose]" >&2
    exit 2
fi
base="${base%/}"
case "$only" in
    ""|python|js) ;;
    *) echo "run.sh: --only takes python or js" >&2; exit 2 ;;
esac

failed=()
fail_setup() { echo "SETUP FAIL: $1" >&2; failed+=("setup: $1"); }

# --- the server must answer before anything else --------------------------------------------
ok=0
for _ in $(seq 1 30); do
    if curl -fsS --max-time 5 "$base/_matrix/client/versions" >/dev/null 2>&1; then ok=1; break; fi
    sleep 1
done
if [ "$ok" != 1 ]; then
    echo "SETUP FAIL: $base/_matrix/client/versions did not answer 200 within 30s" >&2
    exit 1
fi

hash_of() { sha256sum "$@" | sha256sum | cut -c1-16; }

# --- Python venv ---------------------------------------------------------------------------
setup_python() {
    local venv="$root/target/sdk-venv"
    local req="$here/python/requirements.txt"
    local want; want="$(hash_of "$req")"
    if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.sdk-req-hash" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    echo "# setting up $venv" >&2
    mkdir -p "$root/target"
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv" || { fail_setup "python3 -m venv $venv"; return 1; }
    fi
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$req" \
        || { fail_setup "pip install -r $req"; return 1; }
    echo "$want" > "$venv/.sdk-req-hash"
}

# --- node_modules --------------------------------------------------------------------------
setup_js() {
    local dir="$here/js"
    local want; want="$(hash_of "$dir/package.json" "$dir/package-lock.json")"
    if [ -d "$dir/node_modules/matrix-js-sdk" ] && [ "$(cat "$dir/node_modules/.sdk-lock-hash" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    command -v node >/dev/null || { fail_setup "node not installed"; return 1; }
    echo "# npm ci in $dir" >&2
    # matrix-js-sdk declares node >= 22; on Node 20 the flow polyfills what it needs.
    (cd "$dir" && npm ci --no-audit --no-fund --engine-strict=false --loglevel=error) \
        || { fail_setup "npm ci in $dir"; return 1; }
    echo "$want" > "$dir/node_modules/.sdk-lock-hash"
}

# Set-up runs under a lock: several flows may start at once (one per database backend).
locked() {
    mkdir -p "$root/target"
    ( flock 9; "$@" ) 9>"$root/target/.sdk-setup.lock"
}

run_python() {
    locked setup_python || { fail_setup "python set-up"; return 0; }
    echo "=== matrix-nio flow ==="
    "$root/target/sdk-venv/bin/python" "$here/python/flow_nio.py" --base "$base" "${base_b[@]}" "${verbose[@]}"
    local rc=$?
    [ $rc -eq 0 ] || failed+=("python flow (flow_nio.py exit $rc)")
}

run_js() {
    locked setup_js || { fail_setup "js set-up"; return 0; }
    echo "=== matrix-js-sdk flow ==="
    (cd "$here/js" && node flow_jssdk.mjs --base "$base" "${verbose[@]}")
    local rc=$?
    [ $rc -eq 0 ] || failed+=("js flow (flow_jssdk.mjs exit $rc)")
}

case "$only" in
    ""|python) run_python ;;
esac
case "$only" in
    ""|js) run_js ;;
esac
if [ ${#failed[@]} -gt 0 ]; then
    echo "=== SDK flows FAILED against $base:" >&2
    for f in "${failed[@]}"; do echo "  - $f" >&2; done
    exit 1
fi
echo "=== SDK flows passed against $base"

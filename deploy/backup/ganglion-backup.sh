#!/usr/bin/env bash
# Online backup of a Ganglion node: the database (SQLite online backup or pg_dump), the signing
# key and the configuration, into one timestamped directory. Keeps the newest $KEEP backups.
# Usage: ganglion-backup.sh [CONFIG] [DEST]   (defaults: /etc/ganglion/ganglion.toml, /var/backups/ganglion)
set -euo pipefail
CONFIG="${1:-/etc/ganglion/ganglion.toml}"
DEST="${2:-/var/backups/ganglion}"
KEEP="${KEEP:-14}"

toml_get() { # section key
    awk -v sec="$1" -v key="$2" '
        /^\[/ { cur = $0; gsub(/[\[\] ]/, "", cur); next }
        cur == sec && $1 == key { sub(/^[^=]*=[ ]*/, ""); gsub(/^"|"[ ]*(#.*)?$/, ""); print; exit }
    ' "$CONFIG"
}
DATA_DIR="$(toml_get "" data_dir)"; DATA_DIR="${DATA_DIR:-/var/lib/ganglion}"
DB_URL="$(toml_get database url)"; DB_URL="${DB_URL:-sqlite://$DATA_DIR/ganglion.db}"

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="$DEST/$STAMP"
mkdir -p "$OUT"
chmod 700 "$OUT"

case "$DB_URL" in
    sqlite:*)
        DB_PATH="${DB_URL#sqlite://}"; DB_PATH="${DB_PATH#sqlite:}"; DB_PATH="${DB_PATH%%\?*}"
        # The online backup API gives a consistent copy while the server keeps running.
        sqlite3 "$DB_PATH" ".backup '$OUT/ganglion.db'"
        sqlite3 "$OUT/ganglion.db" "PRAGMA integrity_check;" | grep -qx ok
        ;;
    postgres://*|postgresql://*)
        pg_dump --format=custom --file="$OUT/ganglion.pgdump" "$DB_URL"
        ;;
    *) echo "unknown database url: $DB_URL" >&2; exit 1 ;;
esac
cp "$DATA_DIR/signing.key" "$OUT/signing.key"
# Keys replaced by `ganglion rotate-key` (still published so what they signed verifies).
if [ -f "$DATA_DIR/old_signing_keys" ]; then
    cp "$DATA_DIR/old_signing_keys" "$OUT/old_signing_keys"
fi
cp "$CONFIG" "$OUT/ganglion.toml"
if [ -d "$DATA_DIR/media" ]; then
    tar -C "$DATA_DIR" -cf "$OUT/media.tar" media
fi
( cd "$OUT" && sha256sum -- * > SHA256SUMS )
echo "backup written to $OUT"

# Retention
ls -1d "$DEST"/*/ 2>/dev/null | sort | head -n -"$KEEP" | xargs -r rm -rf

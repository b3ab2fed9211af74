#!/usr/bin/env bash
# Screenshots a report.html with Debian's headless chromium:
#   scripts/screenshot-report.sh REPORT.html OUT.png [WIDTHxHEIGHT]
# The page is self-contained (inline SVG, data: PNGs, no script), so the browser is kept
# offline: no network services, no GPU, a throwaway profile.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 REPORT.html OUT.png [WIDTHxHEIGHT]" >&2
    exit 2
fi
report=$1
out=$2
size=${3:-1400x3000}
browser=${CHROMIUM:-chromium}
if ! command -v "$browser" >/dev/null 2>&1; then
    echo "$0: $browser not found; install it with: apt-get install chromium" >&2
    exit 3
fi
if [ ! -f "$report" ]; then
    echo "$0: $report does not exist" >&2
    exit 2
fi
abs_report=$(cd "$(dirname "$report")" && pwd)/$(basename "$report")
out_dir=$(cd "$(dirname "$out")" && pwd)
abs_out=$out_dir/$(basename "$out")
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
rm -f "$abs_out"
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --hide-scrollbars --user-data-dir="$profile" --window-size="${size/x/,}" \
    --screenshot="$abs_out" "file://$abs_report" >/dev/null 2>&1 || true
if [ ! -s "$abs_out" ]; then
    echo "$0: chromium wrote no screenshot to $abs_out" >&2
    exit 1
fi
echo "$abs_out"

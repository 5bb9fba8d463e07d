#!/usr/bin/env bash
# Start Chromium full screen (kiosk mode) on a ward wall screen.
#
#   displays/kiosk.sh 'https://whiteboard.trust.nhs.uk/displays/pair#K7M2Q9XD' [PROFILE]
#       first time: opens the pairing path printed by `whiteboard display add`; the code in
#       the #fragment pairs this screen and the browser keeps the display cookie in its own
#       profile folder. PROFILE is one of displays/profiles/*.json (default landscape-1080p).
#   displays/kiosk.sh
#       every time after (e.g. from autostart): opens the server's `/`, which sends a paired
#       screen to its ward's wall, with the profile it was paired with.
#
# Environment: WB_KIOSK_DIR (default ~/.config/whiteboard-kiosk) holds the browser profile and
# the start URL; CHROMIUM names the browser binary (default: chromium, chromium-browser,
# google-chrome, whichever is found first).
set -euo pipefail

KIOSK_DIR="${WB_KIOSK_DIR:-$HOME/.config/whiteboard-kiosk}"
START_FILE="$KIOSK_DIR/start-url"
mkdir -p "$KIOSK_DIR"

browser="${CHROMIUM:-}"
if [[ -z "$browser" ]]; then
    for candidate in chromium chromium-browser google-chrome; do
        if command -v "$candidate" >/dev/null 2>&1; then
            browser="$candidate"
            break
        fi
    done
fi
if [[ -z "$browser" ]]; then
    echo "kiosk.sh: no Chromium found (Debian/Raspberry Pi OS: apt-get install chromium)" >&2
    exit 1
fi

if [[ $# -ge 1 ]]; then
    url="$1"
    profile="${2:-}"
    if [[ "$url" != http://* && "$url" != https://* ]]; then
        echo "kiosk.sh: give the full URL, e.g. https://whiteboard.trust.nhs.uk/displays/pair#CODE" >&2
        exit 2
    fi
    base="${url%%/displays/pair*}"
    if [[ -n "$profile" ]]; then
        if [[ "$url" == *"#"* ]]; then
            url="${url%%#*}?profile=${profile}#${url#*#}"
        else
            url="${url}?profile=${profile}"
        fi
        printf '%s/?profile=%s\n' "$base" "$profile" >"$START_FILE"
    else
        printf '%s/\n' "$base" >"$START_FILE"
    fi
elif [[ -s "$START_FILE" ]]; then
    url="$(head -n 1 "$START_FILE")"
else
    echo "usage: kiosk.sh 'https://SERVER/displays/pair#CODE' [PROFILE]   (first time)" >&2
    echo "       kiosk.sh                                               (after pairing)" >&2
    exit 2
fi

exec "$browser" \
    --kiosk \
    --user-data-dir="$KIOSK_DIR/browser" \
    --no-first-run \
    --noerrdialogs \
    --disable-infobars \
    --disable-session-crashed-bubble \
    --disable-translate \
    --disable-features=TranslateUI \
    --disable-pinch \
    --overscroll-history-navigation=0 \
    --password-store=basic \
    --check-for-update-interval=31536000 \
    --enable-offline-auto-reload \
    "$url"

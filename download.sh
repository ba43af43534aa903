#!/usr/bin/env bash
# Download Google's Quick, Draw! simplified drawings (one .ndjson per category) and prepare
# the packed store that training and evaluation read (python -m data.prepare).
#
#   ./download.sh                                   # all 345 categories (~26 GB, see docs/DATA.md)
#   ./download.sh --classes "cat,dog,The Eiffel Tower"
#   ./download.sh --dir /big/disk/quickdraw -- --workers 8   # arguments after -- go to prepare
#
# Layout: DIR/simplified/<category>.ndjson, DIR/simplified/SHA256SUMS, DIR/store/ (the store).
# A download is written to <category>.ndjson.part and renamed when complete; running the
# script again resumes a .part file where it stopped (HTTP Range) and skips finished files.
# SHA256SUMS records the hash of every finished file (sha256sum -c format); --verify checks
# finished files against it again. Environment: QUICKDRAW_BASE_URL (default Google's public
# bucket), PYTHON (default python3, else python).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BASE_URL="${QUICKDRAW_BASE_URL:-https://storage.googleapis.com/quickdraw_dataset/full/simplified}"
BASE_URL="${BASE_URL%/}"
DIR="$ROOT/datasets/quickdraw"
STORE=""
CLASSES=""
PREPARE=1
VERIFY=0
EXTRA=()

die() { echo "download.sh: error: $*" >&2; exit 2; }

usage() {
    sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    cat <<EOF

Options:
  --dir DIR        download folder root (default: $ROOT/datasets/quickdraw)
  --store DIR      store folder (default: DIR/store)
  --classes LIST   comma-separated category names, or @FILE with one name per line
                   (default: all of data/categories.txt)
  --verify         re-hash finished downloads and compare them with SHA256SUMS
  --no-prepare     only download
  -- ARGS...       passed to python -m data.prepare (e.g. --per-class ..., --workers N)
EOF
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --dir) [[ $# -ge 2 ]] || die "--dir needs a value"; DIR="$2"; shift 2 ;;
        --store) [[ $# -ge 2 ]] || die "--store needs a value"; STORE="$2"; shift 2 ;;
        --classes) [[ $# -ge 2 ]] || die "--classes needs a value"; CLASSES="$2"; shift 2 ;;
        --verify) VERIFY=1; shift ;;
        --no-prepare) PREPARE=0; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

command -v curl >/dev/null 2>&1 || die "curl is needed to download (install curl)"
if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"
elif command -v python3 >/dev/null 2>&1; then PY=python3
else PY=python; fi

DL="$DIR/simplified"
STORE="${STORE:-$DIR/store}"
SUMS="$DL/SHA256SUMS"

# ---------------------------------------------------------------- which categories
mapfile -t ALL < "$ROOT/data/categories.txt"
declare -A KNOWN=()
for c in "${ALL[@]}"; do KNOWN["$c"]=1; done
if [[ -z "$CLASSES" ]]; then
    WANT=("${ALL[@]}")
else
    if [[ "$CLASSES" == @* ]]; then
        [[ -f "${CLASSES#@}" ]] || die "--classes file ${CLASSES#@} does not exist"
        mapfile -t RAW < "${CLASSES#@}"
    else
        IFS=',' read -r -a RAW <<< "$CLASSES"
    fi
    WANT=()
    for c in "${RAW[@]}"; do
        c="$(echo "$c" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')"
        [[ -z "$c" ]] && continue
        [[ -n "${KNOWN[$c]:-}" ]] || die "unknown category '$c' (names as in data/categories.txt, e.g. 'The Eiffel Tower')"
        WANT+=("$c")
    done
    [[ ${#WANT[@]} -gt 0 ]] || die "--classes names no category"
fi

# ---------------------------------------------------------------- checksums
sha256() {
    if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
    else shasum -a 256 "$1" | cut -d' ' -f1; fi
}
recorded_sum() {  # the hash SHA256SUMS holds for a file name, or nothing
    [[ -f "$SUMS" ]] || return 0
    awk -v f="$1" 'substr($0, 67) == f { print substr($0, 1, 64) }' "$SUMS" | tail -n 1
}
record_sum() {  # replace the file's line in SHA256SUMS (written to a temp file, then renamed)
    local name="$1" sum="$2"
    { [[ -f "$SUMS" ]] && awk -v f="$name" 'substr($0, 67) != f' "$SUMS"; printf '%s  %s\n' "$sum" "$name"; } > "$SUMS.tmp"
    mv "$SUMS.tmp" "$SUMS"
}

# ---------------------------------------------------------------- download
remote_size() {  # Content-Length of a URL (HEAD request), or nothing
    curl --fail --silent --head --location "$1" | tr -d '\r' \
        | awk 'tolower($1) == "content-length:" { n = $2 } END { if (n != "") print n }'
}
mkdir -p "$DL"
if [[ -t 2 ]]; then PROGRESS=(--progress-bar); else PROGRESS=(--silent --show-error); fi
N=${#WANT[@]}
i=0
fetched=0
echo "[download] $N categories from $BASE_URL -> $DL"
for c in "${WANT[@]}"; do
    i=$((i + 1))
    name="$c.ndjson"
    final="$DL/$name"
    part="$final.part"
    if [[ -f "$final" ]]; then
        have="$(recorded_sum "$name")"
        if [[ -z "$have" ]]; then
            record_sum "$name" "$(sha256 "$final")"
        elif [[ $VERIFY -eq 1 && "$(sha256 "$final")" != "$have" ]]; then
            echo "[download] [$i/$N] $c: checksum differs from SHA256SUMS; downloading again" >&2
            rm -f "$final"
        fi
        if [[ -f "$final" ]]; then
            echo "[download] [$i/$N] $c: already downloaded"
            continue
        fi
    fi
    url="$BASE_URL/${c// /%20}.ndjson"
    status=0
    have_size=""
    want_size=""
    if [[ -s "$part" ]]; then
        have_size=$(wc -c < "$part" | tr -d ' ')
        want_size=$(remote_size "$url" || true)
        if [[ -n "$want_size" && "$have_size" -gt "$want_size" ]]; then
            echo "[download] [$i/$N] $c: $part is longer than the file on the server; starting over" >&2
            rm -f "$part"
        fi
    fi
    if [[ -s "$part" && "$have_size" == "$want_size" ]]; then
        echo "[download] [$i/$N] $c: complete in $part (stopped before it was renamed)"
    else
        if [[ -s "$part" ]]; then
            echo "[download] [$i/$N] $c: resuming at byte $have_size"
        else
            echo "[download] [$i/$N] $c"
        fi
        curl --fail --location --retry 3 --retry-delay 2 --continue-at - "${PROGRESS[@]}" -o "$part" "$url" || status=$?
    fi
    if [[ $status -eq 33 || $status -eq 36 ]]; then
        # The server cannot resume (no byte ranges) or the .part is unusable: start over.
        echo "[download] [$i/$N] $c: cannot resume; downloading the whole file" >&2
        rm -f "$part"
        status=0
        curl --fail --location --retry 3 --retry-delay 2 "${PROGRESS[@]}" -o "$part" "$url" || status=$?
    fi
    if [[ $status -ne 0 ]]; then
        die "downloading '$c' from $url failed (curl exit $status); run the script again to resume"
    fi
    mv "$part" "$final"
    record_sum "$name" "$(sha256 "$final")"
    fetched=$((fetched + 1))
done
echo "[download] done: $fetched downloaded, $((N - fetched)) already present; checksums in $SUMS"

# ---------------------------------------------------------------- prepare
if [[ $PREPARE -eq 1 ]]; then
    ARGS=(--src "$DL" --out "$STORE")
    if [[ -n "$CLASSES" ]]; then
        ARGS+=(--classes "$(IFS=,; echo "${WANT[*]}")")
    fi
    echo "[download] preparing the store: $PY -m data.prepare ${ARGS[*]} ${EXTRA[*]:-}"
    PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m data.prepare "${ARGS[@]}" "${EXTRA[@]}"
fi

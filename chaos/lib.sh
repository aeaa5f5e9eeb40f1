# Shared by the chaos scripts: where the simulator's admin API is, argument parsing, curl.
# USER_SIM_URL / PRODUCT_SIM_URL name each upstream's simulator admin address
# (default http://127.0.0.1:8083, where `upstream-sim` serves both upstreams' admin API).
# Only loopback addresses are touched unless CHAOS_ALLOW_REMOTE=1.

DEFAULT_SIM_URL="http://127.0.0.1:8083"

die() { echo "$(basename "$0"): $*" >&2; exit 2; }

show_help() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0; }

sim_url() { # upstream
  local url
  case "$1" in
    user) url="${USER_SIM_URL:-$DEFAULT_SIM_URL}" ;;
    product) url="${PRODUCT_SIM_URL:-$DEFAULT_SIM_URL}" ;;
    *) die "upstream must be 'user' or 'product', got '$1'" ;;
  esac
  url="${url%/}"
  if [[ "${CHAOS_ALLOW_REMOTE:-0}" != 1 ]]; then
    local host="${url#*://}"; host="${host%%/*}"; host="${host%:*}"; host="${host#[}"; host="${host%]}"
    case "$host" in
      127.*|localhost|::1) ;;
      *) die "refusing non-loopback simulator $url (set CHAOS_ALLOW_REMOTE=1 to allow)" ;;
    esac
  fi
  echo "$url"
}

# 1500ms, 5s, 2m → milliseconds
to_ms() {
  local v="$1"
  case "$v" in
    *ms) v="${v%ms}"; [[ "$v" =~ ^[0-9]+$ ]] || die "bad duration '$1'"; echo "$v" ;;
    *s) v="${v%s}"; [[ "$v" =~ ^[0-9]+$ ]] || die "bad duration '$1'"; echo $((v * 1000)) ;;
    *m) v="${v%m}"; [[ "$v" =~ ^[0-9]+$ ]] || die "bad duration '$1'"; echo $((v * 60000)) ;;
    *) die "bad duration '$1' (use e.g. 1500ms, 5s, 2m)" ;;
  esac
}

# Options shared by the injecting scripts: --for DURATION, --key KEY. Sets FOR_MS, KEY, ARGS.
parse_common() {
  FOR_MS=""; KEY=""; ARGS=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
      -h|--help) show_help ;;
      --for) [[ $# -ge 2 ]] || die "--for needs a duration"; FOR_MS="$(to_ms "$2")"; shift 2 ;;
      --key) [[ $# -ge 2 ]] || die "--key needs a value"; KEY="$2"; shift 2 ;;
      --*) die "unknown option $1 (see --help)" ;;
      *) ARGS+=("$1"); shift ;;
    esac
  done
}

# inject UPSTREAM FAULT_JSON: POST the fault, print it and how to undo it.
inject() {
  local upstream="$1" fault="$2" url body response
  url="$(sim_url "$upstream")"
  body="{\"upstream\":\"$upstream\",\"fault\":$fault"
  [[ -n "$KEY" ]] && body="$body,\"key\":\"$KEY\""
  [[ -n "$FOR_MS" ]] && body="$body,\"duration_ms\":$FOR_MS"
  body="$body}"
  response="$(curl -sS --fail-with-body -X POST -H 'content-type: application/json' -d "$body" "$url/__admin/faults")" \
    || die "the simulator at $url refused: $response"
  echo "injected on $upstream-service${KEY:+ (key $KEY)}: $response"
  local id; id="$(echo "$response" | sed -n 's/.*"id":\([0-9]*\).*/\1/p')"
  if [[ -n "$FOR_MS" ]]; then
    echo "it lifts itself after ${FOR_MS} ms."
  fi
  echo "undo: curl -X DELETE $url/__admin/faults/$id   (or chaos/reset to restore everything)"
}

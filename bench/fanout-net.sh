#!/usr/bin/env bash
# bench/fanout-net.sh: fan-out of one image to N machines, each with a limited uplink (run by
# `npm run bench:fanout`, which adds the loopback figures; adapted from ../shared/tools/fanout-bench.sh).
#
#   Case A  Stowage: `stowctl image distribute --from src --to t1..tN` (pipelined along a chain of targets)
#   Case B  the usual alternative: a central docker-registry, N parallel `skopeo copy docker://REG oci:DIR`
#   Case C  push: `stowctl image push --archive image.tar --to t1..tN` from a machine of its own (<prefix>-cli,
#           shaped like the others): it uploads once to t1, the others pull from t1 while the upload arrives
#   Case D  distribute to N with one mid-chain target (t<N/2>, the others after it pull from it) SIGKILLed
#           once it has received KILL_AT of the image: the others must end present, it failed
#
# Every "machine" (control plane, registry, source agent, stowctl's, targets t1..tMAX) is its own network namespace,
# joined by veth pairs to one Linux bridge that lives in a namespace of its own (<prefix>-hub). The root
# namespace gets no address, route or interface: nothing here can reach a real network. Each machine's
# egress (its eth0, inside its namespace) is shaped with
#     tc qdisc add dev eth0 root tbf rate ${RATE}mbit burst 256kb latency 50ms
# and, with DOWNLINK=1, the bridge port facing it too (a cap on what it receives).
#
# Usage (as root; one command, cleans up after itself even on error or Ctrl-C):
#   bench/fanout-net.sh                                  # SIZE=256 MiB, RATE=200 mbit, N = 1 2 4 8
#   SIZE=64 RATE=100 TARGETS="1 2 4" bench/fanout-net.sh
#   bench/fanout-net.sh --size 64 --rate 100 --targets 1,2,4 --repeat 3
#   bench/fanout-net.sh --cleanup        # removes leftovers of a run that was killed with -9
#
# Settings (flag or environment variable):
#   --size MiB        SIZE=256     image size (LAYERS layers of random, incompressible bytes)
#   --rate mbit       RATE=200     per-machine uplink (tbf rate, 10^6 bit/s)
#   --targets LIST    TARGETS="1 2 4 8"    N for cases A and B
#   --push-targets L  PUSH_TARGETS=max N   N for case C
#   --kill-targets L  KILL_TARGETS=max N   N for case D (N >= 3)
#   --kill-at F       KILL_AT=0.5          case D: the fraction of the image the victim has received when killed
#   --cases LIST      CASES="distribute registry push kill"   which cases run (A B C D)
#   --cpu-prof        CPU_PROF=0   every agent writes a V8 CPU profile when stopped (OUT_DIR/prof/<name>/)
#   --layers K        LAYERS=4
#   --repeat R        REPEAT=1     measurements per N and case (the table shows the median)
#   --downlink        DOWNLINK=0   also shape each machine's downlink (the bridge port's egress)
#   --stowage DIR     STOWAGE_DIR=the checkout this script is in (with node_modules)
#   --out DIR         OUT_DIR=/tmp/fanout-bench/<timestamp>   table, JSON per run, logs
#   --subnet A.B.C    SUBNET=10.77.0   (a /24 that exists only inside the namespaces made here)
#   --prefix NAME     PREFIX=stowage-fanout  (namespace names: <prefix>-hub, -ctl, -reg, -src, -t1 …)
#   --keep-data       KEEP_DATA=0  keep agents' stores, registry storage and pulled images in OUT_DIR/work
#
# Needs: root, ip + tc (iproute2, kernel with netns/veth/bridge/sch_tbf), node >= 20, curl, skopeo,
# docker-registry (Debian's distribution 2.8), sha256sum, tar, head. No docker engine, no docker CLI.
#
# Timings: "stowage_s" is the distribute operation as the control plane records it (created_at to
# finished_at: every target present); "stowctl_s" is the wall clock of the stowctl process, which adds
# the CLI's own start-up (node + tsx compiling TypeScript unless `npm run build` made dist/).
# "registry_s" is the wall clock from launching the N skopeo processes to the last one exiting.
# "ideal_1copy_s" is one copy of the image's bytes at RATE: bytes*8/(RATE*10^6) (TCP goodput over tbf is
# a few % lower); "tcp_1copy_s" is one copy measured in the same run: the image's byte count sent over one
# shaped link by a plain TCP sender (src) to a sink (t1), node on both ends; "ideal_Ncopies_s" is N of them through one uplink. "src_copies_out" / "reg_copies_out"
# are the bytes the source agent / the registry sent through its eth0 during the run divided by the
# image size (N when every target pulls from it; a peer-to-peer fan-out would show less). Per target:
# completion time (seconds from the start) and MiB received on its eth0, listed below the table.
# Case C's time is the push operation's (created_at, when stowctl starts uploading, to finished_at: every
# target present), its copies_out the bytes stowctl's machine sent; stowctl's wall clock adds node start-up
# and reading the archive into its temporary store. Case D's copies_out are the source's.
# Raw data: OUT_DIR/runs.tsv, OUT_DIR/runs/stowage-*.json (the final operation), OUT_DIR/work/logs/.

# The whole script is one { … } block: bash parses it entirely before running, so editing this file
# while a run is under way cannot change what that run does.
{
set -Eeuo pipefail
umask 022

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SIZE="${SIZE:-256}"
RATE="${RATE:-200}"
TARGETS="${TARGETS:-1 2 4 8}"
LAYERS="${LAYERS:-4}"
REPEAT="${REPEAT:-1}"
PUSH_TARGETS="${PUSH_TARGETS:-}"
KILL_TARGETS="${KILL_TARGETS:-}"
KILL_AT="${KILL_AT:-0.5}"
CPU_PROF="${CPU_PROF:-0}"
CASES="${CASES:-distribute registry push kill}"
DOWNLINK="${DOWNLINK:-0}"
STOWAGE_DIR="${STOWAGE_DIR:-$(cd "$SCRIPT_DIR/.." && pwd)}"
OUT_DIR="${OUT_DIR:-}"
SUBNET="${SUBNET:-10.77.0}"
PREFIX="${PREFIX:-stowage-fanout}"
KEEP_DATA="${KEEP_DATA:-0}"
MODE=run

usage() { sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --size) SIZE="$2"; shift 2 ;;
    --rate) RATE="$2"; shift 2 ;;
    --targets) TARGETS="${2//,/ }"; shift 2 ;;
    --layers) LAYERS="$2"; shift 2 ;;
    --repeat) REPEAT="$2"; shift 2 ;;
    --push-targets) PUSH_TARGETS="${2//,/ }"; shift 2 ;;
    --kill-targets) KILL_TARGETS="${2//,/ }"; shift 2 ;;
    --kill-at) KILL_AT="$2"; shift 2 ;;
    --cases) CASES="${2//,/ }"; shift 2 ;;
    --cpu-prof) CPU_PROF=1; shift ;;
    --downlink) DOWNLINK=1; shift ;;
    --stowage) STOWAGE_DIR="$2"; shift 2 ;;
    --out) OUT_DIR="$2"; shift 2 ;;
    --subnet) SUBNET="$2"; shift 2 ;;
    --prefix) PREFIX="$2"; shift 2 ;;
    --keep-data) KEEP_DATA=1; shift ;;
    --cleanup) MODE=cleanup; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "fanout-bench: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
TARGETS="${TARGETS//,/ }"
CASES="${CASES//,/ }"
has_case() { [[ " $CASES " == *" $1 "* ]]; }
PUSH_TARGETS="${PUSH_TARGETS//,/ }"
KILL_TARGETS="${KILL_TARGETS//,/ }"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
# sub A B -> A-B with 3 decimals
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }

HUB="$PREFIX-hub"
CTL="$PREFIX-ctl"
REG="$PREFIX-reg"
SRC="$PREFIX-src"
CLI="$PREFIX-cli"
CTL_IP="$SUBNET.2"
REG_IP="$SUBNET.3"
SRC_IP="$SUBNET.10"
CLI_IP="$SUBNET.4"
target_ns() { echo "$PREFIX-t$1"; }
target_ip() { echo "$SUBNET.$((10 + $1))"; }
CTL_PORT=5070
PEER_PORT=5080
REG_PORT=5000
IMAGE_REPO="bench/fanout"
IMAGE_TAG="1"

# --- cleanup ---------------------------------------------------------------------------------------

PIDS=()          # every background process this script started (killed by PID)
CREATED_NS=()    # every namespace this script created (deleted on exit)
WORK=""

# A PID is signalled only while it is still a child of this script (a reaped PID may have been reused).
our_child() { [[ "$(awk '/^PPid:/ {print $2}' "/proc/$1/status" 2>/dev/null)" == "$$" ]]; }
forget_pid() { local p i; for p in "$@"; do for i in "${!PIDS[@]}"; do if [[ "${PIDS[$i]}" == "$p" ]]; then unset 'PIDS[i]'; fi; done; done; }
stop_pid() { # stop_pid PID...: SIGTERM, up to 5 s, then SIGKILL
  local p alive deadline
  for p in "$@"; do if our_child "$p"; then kill -TERM "$p" 2>/dev/null || true; fi; done
  deadline=$((SECONDS + 5))
  while :; do
    alive=()
    for p in "$@"; do if our_child "$p"; then alive+=("$p"); fi; done
    [[ ${#alive[@]} -eq 0 ]] && break
    if (( SECONDS >= deadline )); then
      for p in "${alive[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
      break
    fi
    sleep 0.2
  done
  for p in "$@"; do wait "$p" 2>/dev/null || true; done
  forget_pid "$@"
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM ERR
  [[ $rc -ne 0 ]] && log "exiting with status $rc; cleaning up"
  if [[ ${#PIDS[@]} -gt 0 ]]; then stop_pid "${PIDS[@]}"; fi
  # What runs inside the namespaces made here was started by this script (or its children): skopeo under a subshell.
  local ns p
  for ns in "${CREATED_NS[@]}"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
  done
  # Deleting a namespace deletes its veth end, which deletes the peer on the bridge; the hub takes the bridge.
  for ((i = ${#CREATED_NS[@]} - 1; i >= 0; i--)); do ip netns del "${CREATED_NS[$i]}" 2>/dev/null; done
  if [[ -n "$WORK" && -d "$WORK" && "$KEEP_DATA" != 1 ]]; then
    rm -rf "$WORK/agents" "$WORK/registry" "$WORK/pull" "$WORK/image" "$WORK/image.tar" "$WORK/control/data"
  fi
  [[ -n "$OUT_DIR" ]] && log "results and logs in $OUT_DIR"
  exit "$rc"
}

if [[ "$MODE" == cleanup ]]; then
  [[ $EUID -eq 0 ]] || die "run as root"
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^${PREFIX}-(hub|ctl|reg|src|cli|t[0-9]+)$" || true); do
    for p in $(ip netns pids "$ns" 2>/dev/null); do
      log "killing PID $p ($(tr '\0' ' ' < /proc/$p/cmdline 2>/dev/null | cut -c1-80)) in $ns"
      kill -KILL "$p" 2>/dev/null || true
    done
    ip netns del "$ns" && log "deleted namespace $ns"
  done
  exit 0
fi

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- preflight -------------------------------------------------------------------------------------

[[ $EUID -eq 0 ]] || die "run as root (network namespaces, tc)"
for c in ip tc node curl skopeo docker-registry sha256sum tar head awk; do
  command -v "$c" >/dev/null || die "missing command: $c"
done
[[ "$SIZE" =~ ^[0-9]+$ && "$SIZE" -ge 1 ]] || die "SIZE must be a positive integer (MiB)"
[[ "$RATE" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "RATE must be a number (mbit)"
[[ "$LAYERS" =~ ^[0-9]+$ && "$LAYERS" -ge 1 ]] || die "LAYERS must be a positive integer"
[[ "$REPEAT" =~ ^[0-9]+$ && "$REPEAT" -ge 1 ]] || die "REPEAT must be a positive integer"
[[ "$SUBNET" =~ ^(10\.[0-9]+\.[0-9]+|192\.168\.[0-9]+|172\.(1[6-9]|2[0-9]|3[01])\.[0-9]+)$ ]] || die "SUBNET must be the first three octets of a private /24 (e.g. 10.77.0)"
for c in $CASES; do [[ "$c" =~ ^(distribute|registry|push|kill)$ ]] || die "CASES are distribute, registry, push, kill: $CASES"; done
[[ "$KILL_AT" =~ ^0?[.][0-9]+$ ]] || die "KILL_AT must be a fraction between 0 and 1: $KILL_AT"
MAXN=0
for n in $TARGETS; do
  [[ "$n" =~ ^[0-9]+$ && "$n" -ge 1 ]] || die "TARGETS must be positive integers: $TARGETS"
  if (( n > MAXN )); then MAXN=$n; fi
done
[[ -n "$PUSH_TARGETS" ]] || PUSH_TARGETS=$MAXN
[[ -n "$KILL_TARGETS" ]] || KILL_TARGETS=$MAXN
if has_case push; then for n in $PUSH_TARGETS; do
  [[ "$n" =~ ^[0-9]+$ && "$n" -ge 1 ]] || die "PUSH_TARGETS must be positive integers: $PUSH_TARGETS"
  if (( n > MAXN )); then MAXN=$n; fi
done; fi
if has_case kill; then for n in $KILL_TARGETS; do
  [[ "$n" =~ ^[0-9]+$ && "$n" -ge 3 ]] || die "KILL_TARGETS must be integers >= 3 (a victim with targets before and after it): $KILL_TARGETS"
  if (( n > MAXN )); then MAXN=$n; fi
done; fi
(( MAXN >= 1 && MAXN <= 200 )) || die "TARGETS must be between 1 and 200"
[[ -f "$STOWAGE_DIR/bin/stowd.js" && -d "$STOWAGE_DIR/node_modules" ]] || die "no Stowage checkout with node_modules at $STOWAGE_DIR (run it from a checkout after npm ci, or set STOWAGE_DIR)"
STOWD="$STOWAGE_DIR/bin/stowd.js"
STOWCTL="$STOWAGE_DIR/bin/stowctl.js"
for ns in "$HUB" "$CTL" "$REG" "$SRC" "$CLI"; do
  [[ ! -e "/var/run/netns/$ns" ]] || die "namespace $ns exists already (a killed earlier run? remove it with: $0 --cleanup --prefix $PREFIX)"
done
for ((i = 1; i <= MAXN; i++)); do
  [[ ! -e "/var/run/netns/$(target_ns $i)" ]] || die "namespace $(target_ns $i) exists already (remove with: $0 --cleanup --prefix $PREFIX)"
done

[[ -n "$OUT_DIR" ]] || OUT_DIR="/tmp/stowage-fanout/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
WORK="$OUT_DIR/work"
mkdir -p "$WORK/logs" "$WORK/agents" "$WORK/control" "$WORK/registry" "$WORK/pull" "$OUT_DIR/runs"
# Go's HTTP client (skopeo) honours proxy variables; nothing here may leave the namespaces.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY

log "SIZE=${SIZE}MiB RATE=${RATE}mbit TARGETS='$TARGETS' LAYERS=$LAYERS REPEAT=$REPEAT DOWNLINK=$DOWNLINK"
log "CASES='$CASES' PUSH_TARGETS='$PUSH_TARGETS' KILL_TARGETS='$KILL_TARGETS' KILL_AT=$KILL_AT"
log "Stowage: $STOWAGE_DIR ($(cd "$STOWAGE_DIR" && git rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout'))"
log "output: $OUT_DIR"
{
  echo "date: $(date -Is)"; echo "host: $(uname -a)"; echo "nproc: $(nproc)"; echo "loadavg at start: $(cat /proc/loadavg)"
  echo "SIZE=$SIZE RATE=$RATE TARGETS=$TARGETS LAYERS=$LAYERS REPEAT=$REPEAT DOWNLINK=$DOWNLINK SUBNET=$SUBNET.0/24"
  echo "CASES=$CASES PUSH_TARGETS=$PUSH_TARGETS KILL_TARGETS=$KILL_TARGETS KILL_AT=$KILL_AT"
  echo "stowage: $STOWAGE_DIR $(cd "$STOWAGE_DIR" && git rev-parse HEAD 2>/dev/null)"
  echo "node $(node --version); $(skopeo --version); $(docker-registry --version 2>&1 | head -1)"
} > "$OUT_DIR/environment.txt"
LOAD0="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- network ---------------------------------------------------------------------------------------

shape() { # shape NS DEV: the tbf every machine gets
  ip netns exec "$1" tc qdisc replace dev "$2" root tbf rate "${RATE}mbit" burst 256kb latency 50ms
}

add_ns() {
  ip netns add "$1"
  CREATED_NS+=("$1")
  ip -n "$1" link set lo up
  ip netns exec "$1" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 >/dev/null 2>&1 || true
  ip netns exec "$1" sysctl -q -w net.ipv6.conf.default.disable_ipv6=1 >/dev/null 2>&1 || true
}

add_machine() { # add_machine NS IP SHORTNAME: a namespace with eth0 on the bridge, IP/24, shaped egress
  local ns=$1 ip=$2 short=$3
  add_ns "$ns"
  # Both ends are created directly inside their namespaces: nothing appears in the root namespace.
  ip link add eth0 netns "$ns" type veth peer name "p-$short" netns "$HUB"
  ip -n "$HUB" link set "p-$short" master br0 up
  ip -n "$ns" addr add "$ip/24" dev eth0
  ip -n "$ns" link set eth0 up
  shape "$ns" eth0
  if [[ "$DOWNLINK" == 1 ]]; then shape "$HUB" "p-$short"; fi
}

log "creating namespaces and bridge ($SUBNET.0/24, $((MAXN + 4)) machines)"
add_ns "$HUB"
ip -n "$HUB" link add br0 type bridge forward_delay 0 stp_state 0
ip -n "$HUB" link set br0 up
add_machine "$CTL" "$CTL_IP" ctl
add_machine "$REG" "$REG_IP" reg
add_machine "$SRC" "$SRC_IP" src
add_machine "$CLI" "$CLI_IP" cli
for ((i = 1; i <= MAXN; i++)); do add_machine "$(target_ns $i)" "$(target_ip $i)" "t$i"; done
{ echo "# $SRC eth0"; ip netns exec "$SRC" tc qdisc show dev eth0; echo "# $HUB (bridge ports; tbf only with DOWNLINK=1)"; ip netns exec "$HUB" tc qdisc show; } > "$WORK/logs/tc.txt"

# --- processes -------------------------------------------------------------------------------------

wait_for_line() { # wait_for_line PID FILE REGEX SECONDS WHAT
  local pid=$1 file=$2 re=$3 secs=$4 what=$5 deadline=$((SECONDS + $4))
  until grep -qE "$re" "$file" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$file" >&2; die "$what exited (log: $file)"; }
    (( SECONDS < deadline )) || { tail -n 30 "$file" >&2; die "$what not ready after ${secs}s (log: $file)"; }
    sleep 0.2
  done
}

api() { # api METHOD PATH [JSON]: the control plane's REST API as the superadmin, from inside its namespace
  local args=(-sS --fail-with-body -X "$1" -H "Authorization: Bearer $ADMIN_TOKEN")
  [[ $# -ge 3 ]] && args+=(-H 'content-type: application/json' --data "$3")
  ip netns exec "$CTL" curl "${args[@]}" "http://$CTL_IP:$CTL_PORT$2"
}

log "starting the control plane in $CTL ($CTL_IP:$CTL_PORT)"
cat > "$WORK/control/control.json" <<EOF
{ "dataDir": "$WORK/control/data", "listen": { "host": "$CTL_IP", "port": $CTL_PORT }, "insecureHttp": true,
  "heartbeatIntervalMs": 2000, "offlineAfterMs": 30000, "targetConcurrency": 64 }
EOF
ip netns exec "$CTL" node "$STOWD" control --config "$WORK/control/control.json" > "$WORK/logs/control.log" 2>&1 &
CTL_PID=$!
PIDS+=("$CTL_PID")
wait_for_line "$CTL_PID" "$WORK/logs/control.log" 'control plane ready' 120 "control plane"
ADMIN_TOKEN="$(tr -d '\n' < "$WORK/control/data/admin.token")"
JOIN_TOKEN="$(tr -d '\n' < "$WORK/control/data/join.token")"

declare -A AGENT_PID=()
start_agent() { # start_agent NS IP NAME (does not wait)
  local ns=$1 ip=$2 name=$3 prof=()
  if [[ "$CPU_PROF" == 1 ]]; then prof=(--cpu-prof --cpu-prof-dir "$OUT_DIR/prof/$name"); fi
  STOWAGE_JOIN_TOKEN="$JOIN_TOKEN" ip netns exec "$ns" node "${prof[@]}" "$STOWD" agent --data-dir "$WORK/agents/$name" \
    --peer-host "$ip" --peer-port "$PEER_PORT" --control-url "http://$CTL_IP:$CTL_PORT" --name "$name" \
    > "$WORK/logs/agent-$name.log" 2>&1 &
  AGENT_PID[$name]=$!
  PIDS+=("$!")
}
wait_agents() { # wait_agents NAME...: each says "agent ready" and the control plane lists it online
  local name
  for name in "$@"; do wait_for_line "${AGENT_PID[$name]}" "$WORK/logs/agent-$name.log" 'agent ready' 180 "agent $name"; done
  local deadline=$((SECONDS + 120)) machines missing
  while :; do
    machines="$(api GET /api/v1/machines 2>/dev/null || true)"
    missing="$(MACHINES="$machines" node -e '
      const want = process.argv.slice(1);
      let ms = []; try { ms = JSON.parse(process.env.MACHINES).machines; } catch {}
      const online = new Set(ms.filter((m) => m.status === "online").map((m) => m.id));
      console.log(want.filter((n) => !online.has(n)).join(" "));' "$@")"
    [[ -z "$missing" ]] && return 0
    (( SECONDS < deadline )) || die "agents not online at the control plane: $missing"
    sleep 0.5
  done
}
stop_agents() { # stop_agents NAME...: stop by PID, drop their stores
  local name pids=()
  for name in "$@"; do pids+=("${AGENT_PID[$name]}"); done
  stop_pid "${pids[@]}"
  for name in "$@"; do rm -rf "${WORK:?}/agents/$name"; unset "AGENT_PID[$name]"; done
}

log "starting the source agent in $SRC ($SRC_IP:$PEER_PORT)"
start_agent "$SRC" "$SRC_IP" src
wait_agents src

log "starting docker-registry in $REG ($REG_IP:$REG_PORT)"
cat > "$WORK/registry/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/registry/data
  delete:
    enabled: true
http:
  addr: 0.0.0.0:$REG_PORT
EOF
ip netns exec "$REG" docker-registry serve "$WORK/registry/config.yml" > "$WORK/logs/registry.log" 2>&1 &
REG_PID=$!
PIDS+=("$REG_PID")
deadline=$((SECONDS + 60))
until ip netns exec "$REG" curl -sf -o /dev/null "http://127.0.0.1:$REG_PORT/v2/"; do
  kill -0 "$REG_PID" 2>/dev/null || die "docker-registry exited (log: $WORK/logs/registry.log)"
  (( SECONDS < deadline )) || die "docker-registry not answering"
  sleep 0.2
done

# --- image -----------------------------------------------------------------------------------------

log "generating a ${SIZE} MiB image: $LAYERS layers of random bytes"
IMG="$WORK/image"
mkdir -p "$IMG/archive" "$IMG/files"
total=$((SIZE * 1048576))
per=$((total / LAYERS))
layer_names=()
diff_ids=()
for ((i = 1; i <= LAYERS; i++)); do
  bytes=$per
  if (( i == LAYERS )); then bytes=$((total - per * (LAYERS - 1))); fi
  head -c "$bytes" /dev/urandom > "$IMG/files/layer$i.bin"
  tar --numeric-owner --owner=0 --group=0 --mtime=@0 -C "$IMG/files" -cf "$IMG/layer.tar" "layer$i.bin"
  rm -f "$IMG/files/layer$i.bin"
  hex="$(sha256sum "$IMG/layer.tar" | cut -d' ' -f1)"
  mkdir -p "$IMG/archive/$hex"
  mv "$IMG/layer.tar" "$IMG/archive/$hex/layer.tar"
  layer_names+=("$hex/layer.tar")
  diff_ids+=("\"sha256:$hex\"")
done
hist="$(for ((i = 1; i <= LAYERS; i++)); do printf '{"created_by":"fanout-bench layer %d"},' "$i"; done)"
hist="${hist%,}"
printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[%s]},"history":[%s]}' \
  "$(IFS=,; echo "${diff_ids[*]}")" "$hist" > "$IMG/config.json"
chex="$(sha256sum "$IMG/config.json" | cut -d' ' -f1)"
mv "$IMG/config.json" "$IMG/archive/$chex.json"
printf '[{"Config":"%s.json","RepoTags":["%s:%s"],"Layers":[%s]}]' "$chex" "$IMAGE_REPO" "$IMAGE_TAG" \
  "$(printf '"%s",' "${layer_names[@]}" | sed 's/,$//')" > "$IMG/archive/manifest.json"
tar -C "$IMG/archive" -cf "$WORK/image.tar" manifest.json "$chex.json" "${layer_names[@]}"
rm -rf "$IMG"

log "loading it into the source agent (Docker Engine API on its unix socket)"
load_out="$(curl -sS --fail-with-body --unix-socket "$WORK/agents/src/docker.sock" -X POST \
  -H 'content-type: application/x-tar' -T "$WORK/image.tar" "http://stowage/v1.41/images/load?quiet=1")" \
  || die "docker load into the source agent failed: $load_out"
echo "$load_out" > "$WORK/logs/load.txt"
deadline=$((SECONDS + 120))
DIGEST=""
while [[ -z "$DIGEST" ]]; do
  status="$(api GET '/api/v1/images/status?machine=src' 2>/dev/null || true)"
  DIGEST="$(STATUS="$status" node -e '
    let r = []; try { r = JSON.parse(process.env.STATUS).records; } catch {}
    const x = r.find((x) => x.references.includes(process.argv[1]) && x.presence.state === "present");
    if (x) console.log(x.digest + " " + x.size_bytes);' "docker.io/$IMAGE_REPO:$IMAGE_TAG")"
  [[ -n "$DIGEST" ]] && break
  (( SECONDS < deadline )) || die "the control plane never listed the image on src"
  sleep 0.5
done
IMAGE_BYTES="${DIGEST#* }"
DIGEST="${DIGEST% *}"
log "image $DIGEST on src, $IMAGE_BYTES bytes"

log "pushing the same image to the registry (skopeo, inside $REG, over its loopback)"
ip netns exec "$REG" skopeo copy -q --dest-tls-verify=false "docker-archive:$WORK/image.tar" \
  "docker://127.0.0.1:$REG_PORT/$IMAGE_REPO:$IMAGE_TAG" > "$WORK/logs/registry-push.log" 2>&1 \
  || { cat "$WORK/logs/registry-push.log" >&2; die "skopeo push to the registry failed"; }
REG_BYTES="$(ip netns exec "$REG" skopeo inspect --raw --tls-verify=false "docker://127.0.0.1:$REG_PORT/$IMAGE_REPO:$IMAGE_TAG" \
  | node -e 'let s="";process.stdin.on("data",(d)=>s+=d).on("end",()=>{const m=JSON.parse(s);console.log(m.config.size+m.layers.reduce((a,l)=>a+l.size,0))})')"
log "registry copy: $REG_BYTES bytes (skopeo gzips the uncompressed layers on push; random data does not shrink)"
# stowctl pushes the same archive (case C).
has_case push || rm -f "$WORK/image.tar"

# --- measurements ----------------------------------------------------------------------------------

RESULTS="$OUT_DIR/runs.tsv"
printf 'case\tN\trep\tseconds\tstowctl_wall_s\tserver_tx_bytes\tper_target\tnote\n' > "$RESULTS"

# Bytes through a machine's eth0 (its /sys is remounted for the namespace by ip netns exec).
ns_bytes() { ip netns exec "$1" cat "/sys/class/net/eth0/statistics/$2_bytes"; }
rx_snapshot() { # rx_snapshot N: "t1=BYTES t2=BYTES …"
  local i out=()
  for ((i = 1; i <= $1; i++)); do out+=("t$i=$(ns_bytes "$(target_ns $i)" rx)"); done
  echo "${out[*]}"
}
rx_delta() { # rx_delta "BEFORE" "AFTER": "t1=MiB,t2=MiB…"
  awk -v a="$1" -v b="$2" 'BEGIN {
    n = split(a, x, " "); split(b, y, " ");
    for (i = 1; i <= n; i++) { split(x[i], p, "="); split(y[i], q, "="); printf "%s%s=%.1f", (i > 1 ? "," : ""), p[1], (q[2] - p[2]) / 1048576 }
  }'
}
mib() { awk -v b="$1" 'BEGIN{printf "%.1f", b/1048576}'; }

# Where the time goes: every 0.25 s, the MiB each target has received so far (its bridge port's tx, read in
# the hub namespace: one process per sample), in FILE as "seconds t1 … tN". Stopped by timeline_stop.
timeline_start() { # timeline_start N FILE
  local n=$1 file=$2 i ports=()
  for ((i = 1; i <= n; i++)); do ports+=("/sys/class/net/p-t$i/statistics/tx_bytes"); done
  ( printf 'seconds'; for ((i = 1; i <= n; i++)); do printf '\tt%d' "$i"; done; echo
    local base t0 now0
    base="$(ip netns exec "$HUB" cat "${ports[@]}" | tr '\n' ' ')"
    t0=$(now)
    while :; do
      now0=$(now)
      ip netns exec "$HUB" cat "${ports[@]}" | awk -v base="$base" -v t="$(sub "$now0" "$t0")" '
        BEGIN { split(base, b, " ") } { v[NR] = ($1 - b[NR]) / 1048576 }
        END { printf "%s", t; for (i = 1; i <= NR; i++) printf "\t%.1f", v[i]; print "" }'
      sleep 0.25
    done ) > "$file" 2>/dev/null &
  TIMELINE_PID=$!
  PIDS+=("$TIMELINE_PID")
}
timeline_stop() { stop_pid "$TIMELINE_PID"; }

# CPU seconds a process has used so far, "user+system" ("0+0" once it is gone); cpu_total sums them over processes.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f+%.2f", $14 / hz, $15 / hz }' "/proc/$1/stat" 2>/dev/null || echo 0+0; }
cpu_total() {
  local p all=()
  for p in "$@"; do all+=("$(cpu_s "$p")"); done
  echo "${all[@]}" | awk '{ for (i = 1; i <= NF; i++) { split($i, x, "+"); u += x[1]; s += x[2] } printf "%.2f+%.2f", u, s }'
}

# op_summary FILE RXDELTA [VICTIM KILL_EPOCH]: "seconds<TAB>per target<TAB>note" of the operation stowctl
# printed (created_at to finished_at). Fails unless every target is present, but VICTIM, which must be failed.
op_summary() {
  node -e '
    const [file, rxs, victim, killEpoch] = process.argv.slice(1);
    const op = JSON.parse(require("fs").readFileSync(file, "utf8")).operation;
    const rx = Object.fromEntries(rxs.split(",").map((kv) => kv.split("=")));
    const c = Date.parse(op.created_at);
    const short = (id) => id.split("-")[0];
    const bad = op.targets.filter((t) => (short(t.machine_id) === victim ? t.status !== "failed" : t.status !== "present"));
    if (bad.length > 0 || (!victim && op.status !== "succeeded")) { console.error(JSON.stringify(op, null, 1)); process.exit(1); }
    const per = op.targets.map((t) => [short(t.machine_id), (Date.parse(t.finished_at ?? op.finished_at) - c) / 1000, t.status]);
    per.sort((a, b) => a[1] - b[1]);
    const fmt = ([m, s, st]) => `${m}=${victim ? st + "@" : ""}${s.toFixed(2)}s/${rx[m]}MiB`;
    const dead = op.targets.find((t) => short(t.machine_id) === victim);
    const note = victim ? `${victim} SIGKILLed at ${((Number(killEpoch) * 1000 - c) / 1000).toFixed(2)}s, ended ${dead.status} (${dead.failure?.code ?? "-"})` : "";
    console.log(((Date.parse(op.finished_at) - c) / 1000).toFixed(3) + "\t" + per.map(fmt).join(",") + "\t" + note);
  ' "$@"
}

# One copy of the image's byte count over one shaped link by plain TCP (src to t1): the line rate as it is
# measured, the baseline next to the computed ideal.
run_tcp_baseline() {
  local sink out port=5099
  : > "$WORK/logs/tcp-sink.log" # a log left by an earlier run in the same --out must not say "ready"
  ip netns exec "$(target_ns 1)" node -e '
    const srv = require("net").createServer((s) => { s.on("data", () => {}); s.on("end", () => { s.end(); srv.close(); }); });
    srv.on("close", () => { const u = process.cpuUsage(); console.log(`sink cpu ${(u.user / 1e6).toFixed(2)}+${(u.system / 1e6).toFixed(2)}`); });
    srv.listen(Number(process.argv[2]), process.argv[1], () => console.log("sink ready"));' "$(target_ip 1)" "$port" > "$WORK/logs/tcp-sink.log" 2>&1 &
  sink=$!
  PIDS+=("$sink")
  wait_for_line "$sink" "$WORK/logs/tcp-sink.log" 'sink ready' 60 "tcp sink"
  out="$(ip netns exec "$SRC" node -e '
    const [host, port, bytes] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
    const chunk = Buffer.alloc(1 << 20, 7);
    const t0 = process.hrtime.bigint();
    const s = require("net").connect(port, host, () => {
      let left = bytes;
      const pump = () => {
        while (left > 0) {
          const n = Math.min(left, chunk.length);
          left -= n;
          if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void s.once("drain", pump);
        }
        s.end();
      };
      pump();
    });
    s.on("data", () => {});
    // The sink closes its side once it has read the last byte.
    s.on("close", () => {
      const u = process.cpuUsage();
      console.log((Number(process.hrtime.bigint() - t0) / 1e9).toFixed(3) + " " + (u.user / 1e6).toFixed(2) + "+" + (u.system / 1e6).toFixed(2));
    });' "$(target_ip 1)" "$port" "$IMAGE_BYTES")"
  wait "$sink" || true
  forget_pid "$sink"
  local secs="${out%% *}" note
  # What moving one copy costs the two ends without Stowage (node, kernel, the emulated link): the floor.
  note="cpu: sender ${out#* } s, $(grep -o 'sink cpu .*' "$WORK/logs/tcp-sink.log" || echo 'sink cpu ?') s (user+sys); load $(cut -d' ' -f1 /proc/loadavg)"
  printf 'tcp\t1\t1\t%s\t\t%s\t\t%s\n' "$secs" "$IMAGE_BYTES" "$note" >> "$RESULTS"
  log "one copy over one shaped link, plain TCP: ${secs}s; $note"
}

agent_pids() { local name; for name in "$@"; do echo "${AGENT_PID[$name]}"; done; }
cpu_note() { # cpu_note CPU0 CPU1 CTL0 CTL1 WALL: what the agents and the control plane used of the box's cores
  awk -v a="$1" -v b="$2" -v c="$3" -v d="$4" -v w="$5" -v n="$(nproc)" -v l="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN {
    split(a, a2, "+"); split(b, b2, "+"); split(c, c2, "+"); split(d, d2, "+");
    printf "cpu: agents %.1f s (user %.1f, sys %.1f), control %.1f s in %.1f s wall (%d cores); load %s",
      b2[1] + b2[2] - a2[1] - a2[2], b2[1] - a2[1], b2[2] - a2[2], d2[1] + d2[2] - c2[1] - c2[2], w, n, l }'
}

start_targets() { # start_targets N TAG: agents t1-TAG … tN-TAG in t1 … tN; sets NAMES
  local n=$1 tag=$2 i
  NAMES=()
  for ((i = 1; i <= n; i++)); do
    NAMES+=("t$i-$tag")
    start_agent "$(target_ns $i)" "$(target_ip $i)" "t$i-$tag"
  done
  wait_agents "${NAMES[@]}"
  sleep 1
}

stowctl_bg() { # stowctl_bg NS OUT ERR ARGS…: stowctl as the superadmin inside NS, in the background (STOWCTL_PID)
  local ns=$1 out=$2 err=$3
  shift 3
  # In the background and waited for, so that a signal to this script is handled at once.
  STOWAGE_HOST="http://$CTL_IP:$CTL_PORT" STOWAGE_TOKEN="$ADMIN_TOKEN" ip netns exec "$ns" node "$STOWCTL" --json "$@" > "$out" 2> "$err" &
  STOWCTL_PID=$!
  PIDS+=("$STOWCTL_PID")
}

run_stowage() { # run_stowage N REP
  local n=$1 rep=$2
  start_targets "$n" "n$n-r$rep"
  local names=("${NAMES[@]}") out="$OUT_DIR/runs/stowage-n$n-r$rep.json" t0 t1 rc=0 rx0 rx1 tx0 tx1
  log "A: stowctl image distribute to $n target(s) (rep $rep)"
  local pids cpu0 ctl0
  pids=($(agent_pids src "${names[@]}"))
  cpu0=$(cpu_total "${pids[@]}"); ctl0=$(cpu_s "$CTL_PID")
  timeline_start "$n" "$OUT_DIR/runs/stowage-n$n-r$rep-timeline.tsv"
  rx0="$(rx_snapshot "$n")"; tx0="$(ns_bytes "$SRC" tx)"
  t0=$(now)
  stowctl_bg "$CTL" "$out" "$WORK/logs/stowctl-n$n-r$rep.log" image distribute --digest "$DIGEST" --from src --to "$(IFS=,; echo "${names[*]}")"
  wait "$STOWCTL_PID" || rc=$?
  t1=$(now)
  forget_pid "$STOWCTL_PID"
  timeline_stop
  rx1="$(rx_snapshot "$n")"; tx1="$(ns_bytes "$SRC" tx)"
  [[ $rc -eq 0 ]] || { cat "$out" "$WORK/logs/stowctl-n$n-r$rep.log" >&2; die "stowctl image distribute failed ($rc)"; }
  local parsed op_s per wall cpu
  parsed="$(op_summary "$out" "$(rx_delta "$rx0" "$rx1")")" || die "distribute did not leave every target present (see $out)"
  IFS=$'\t' read -r op_s per _ <<< "$parsed"
  wall=$(sub "$t1" "$t0")
  cpu="$(cpu_note "$cpu0" "$(cpu_total "${pids[@]}")" "$ctl0" "$(cpu_s "$CTL_PID")" "$wall")"
  printf 'stowage\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$rep" "$op_s" "$wall" "$((tx1 - tx0))" "$per" "$cpu" >> "$RESULTS"
  log "A: N=$n operation ${op_s}s (stowctl wall ${wall}s), src sent $(mib $((tx1 - tx0))) MiB; $cpu; per target (done at / received): $per"
  stop_agents "${names[@]}"
}

run_push() { # run_push N REP: stowctl, on a machine of its own, pushes the archive to t1 … tN
  local n=$1 rep=$2
  start_targets "$n" "push$n-r$rep"
  local names=("${NAMES[@]}") out="$OUT_DIR/runs/push-n$n-r$rep.json" err="$WORK/logs/stowctl-push-n$n-r$rep.log" t0 t1 rc=0 rx0 rx1 tx0 tx1 srctx0 srctx1
  log "C: stowctl image push --archive to $n target(s), from $CLI (rep $rep)"
  local pids cpu0 ctl0
  pids=($(agent_pids "${names[@]}"))
  cpu0=$(cpu_total "${pids[@]}"); ctl0=$(cpu_s "$CTL_PID")
  timeline_start "$n" "$OUT_DIR/runs/push-n$n-r$rep-timeline.tsv"
  rx0="$(rx_snapshot "$n")"; tx0="$(ns_bytes "$CLI" tx)"; srctx0="$(ns_bytes "$SRC" tx)"
  t0=$(now)
  stowctl_bg "$CLI" "$out" "$err" image push --archive "$WORK/image.tar" --to "$(IFS=,; echo "${names[*]}")" "$IMAGE_REPO:$IMAGE_TAG"
  wait "$STOWCTL_PID" || rc=$?
  t1=$(now)
  forget_pid "$STOWCTL_PID"
  timeline_stop
  rx1="$(rx_snapshot "$n")"; tx1="$(ns_bytes "$CLI" tx)"; srctx1="$(ns_bytes "$SRC" tx)"
  [[ $rc -eq 0 ]] || { cat "$out" "$err" >&2; die "stowctl image push failed ($rc)"; }
  local parsed op_s per wall cpu
  parsed="$(op_summary "$out" "$(rx_delta "$rx0" "$rx1")")" || die "push did not leave every target present (see $out)"
  IFS=$'\t' read -r op_s per _ <<< "$parsed"
  wall=$(sub "$t1" "$t0")
  cpu="$(cpu_note "$cpu0" "$(cpu_total "${pids[@]}")" "$ctl0" "$(cpu_s "$CTL_PID")" "$wall")"
  # The source agent takes no part in a push: what it sent meanwhile shows nothing leaked to it.
  printf 'push\t%s\t%s\t%s\t%s\t%s\t%s\tsrc sent %s MiB; %s\n' "$n" "$rep" "$op_s" "$wall" "$((tx1 - tx0))" "$per" "$(mib $((srctx1 - srctx0)))" "$cpu" >> "$RESULTS"
  log "C: N=$n push ${op_s}s from the upload start (stowctl wall ${wall}s), stowctl sent $(mib $((tx1 - tx0))) MiB; $cpu; per target: $per"
  stop_agents "${names[@]}"
}

run_kill() { # run_kill N REP: distribute to N; the mid-chain target is SIGKILLed once it has KILL_AT of the image
  local n=$1 rep=$2 v=$((($1 + 1) / 2))
  start_targets "$n" "kill$n-r$rep"
  local names=("${NAMES[@]}") out="$OUT_DIR/runs/kill-n$n-r$rep.json" err="$WORK/logs/stowctl-kill-n$n-r$rep.log" t0 t1 rc=0 rx0 rx1 tx0 tx1
  local victim="${names[$((v - 1))]}" vns vrx0 at killed=""
  local vpid="${AGENT_PID[$victim]}"
  vns="$(target_ns "$v")"
  at="$(awk -v b="$IMAGE_BYTES" -v f="$KILL_AT" 'BEGIN{printf "%d", b * f}')"
  log "D: stowctl image distribute to $n target(s), t$v SIGKILLed after $(mib "$at") MiB (rep $rep)"
  local pids=() cpu0 ctl0 name
  for name in src "${names[@]}"; do [[ "$name" == "$victim" ]] || pids+=("${AGENT_PID[$name]}"); done
  cpu0=$(cpu_total "${pids[@]}"); ctl0=$(cpu_s "$CTL_PID")
  timeline_start "$n" "$OUT_DIR/runs/kill-n$n-r$rep-timeline.tsv"
  rx0="$(rx_snapshot "$n")"; tx0="$(ns_bytes "$SRC" tx)"; vrx0="$(ns_bytes "$vns" rx)"
  t0=$(now)
  stowctl_bg "$CTL" "$out" "$err" image distribute --digest "$DIGEST" --from src --to "$(IFS=,; echo "${names[*]}")"
  while kill -0 "$STOWCTL_PID" 2>/dev/null; do
    if (( $(ns_bytes "$vns" rx) - vrx0 >= at )); then
      our_child "$vpid" && kill -KILL "$vpid"
      killed=$(now)
      wait "$vpid" 2>/dev/null || true
      forget_pid "$vpid"
      break
    fi
    sleep 0.05
  done
  wait "$STOWCTL_PID" || rc=$?
  t1=$(now)
  forget_pid "$STOWCTL_PID"
  timeline_stop
  rx1="$(rx_snapshot "$n")"; tx1="$(ns_bytes "$SRC" tx)"
  [[ -n "$killed" ]] || { cat "$out" >&2; die "the distribution ended before t$v had received $(mib "$at") MiB: nothing was killed"; }
  # stowctl exits non-zero: a target failed, as it should have.
  [[ -s "$out" ]] || { cat "$err" >&2; die "stowctl image distribute printed no operation ($rc)"; }
  local parsed op_s per note wall
  parsed="$(op_summary "$out" "$(rx_delta "$rx0" "$rx1")" "t$v" "$killed")" || die "after the kill, not every other target ended present, or t$v not failed (see $out)"
  IFS=$'\t' read -r op_s per note <<< "$parsed"
  wall=$(sub "$t1" "$t0")
  note="$note; $(cpu_note "$cpu0" "$(cpu_total "${pids[@]}")" "$ctl0" "$(cpu_s "$CTL_PID")" "$wall") (the survivors)"
  printf 'kill\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$rep" "$op_s" "$wall" "$((tx1 - tx0))" "$per" "$note" >> "$RESULTS"
  log "D: N=$n operation ${op_s}s (stowctl wall ${wall}s, exit $rc), src sent $(mib $((tx1 - tx0))) MiB; $note; per target: $per"
  stop_agents "${names[@]}"
}

run_registry() { # run_registry N REP
  local n=$1 rep=$2 i t0 t1 pids=() per=() rc end
  rm -rf "${WORK:?}/pull" && mkdir -p "$WORK/pull"
  log "B: $n parallel skopeo copy from the registry (rep $rep)"
  local rx0 rx1 tx0 tx1 rx
  rx0="$(rx_snapshot "$n")"; tx0="$(ns_bytes "$REG" tx)"
  t0=$(now)
  for ((i = 1; i <= n; i++)); do
    (
      if ip netns exec "$(target_ns $i)" skopeo copy -q --src-tls-verify=false \
        "docker://$REG_IP:$REG_PORT/$IMAGE_REPO:$IMAGE_TAG" "oci:$WORK/pull/t$i:fanout" \
        > "$WORK/logs/skopeo-n$n-r$rep-t$i.log" 2>&1; then rc=0; else rc=$?; fi
      echo "$rc $(now)" > "$WORK/pull/t$i.done"
    ) &
    pids+=("$!")
    PIDS+=("$!")
  done
  for p in "${pids[@]}"; do wait "$p" || true; done
  t1=$(now)
  forget_pid "${pids[@]}"
  rx1="$(rx_snapshot "$n")"; tx1="$(ns_bytes "$REG" tx)"
  rx="$(rx_delta "$rx0" "$rx1")"
  for ((i = 1; i <= n; i++)); do
    [[ -f "$WORK/pull/t$i.done" ]] || die "skopeo in t$i left no result"
    read -r rc end < "$WORK/pull/t$i.done"
    [[ "$rc" == 0 ]] || { cat "$WORK/logs/skopeo-n$n-r$rep-t$i.log" >&2; die "skopeo copy in t$i failed ($rc)"; }
    per+=("t$i=$(sub "$end" "$t0")=$(echo ",$rx," | sed -E "s/.*,t$i=([0-9.]+),.*/\1/")")
  done
  local wall per_sorted
  wall=$(sub "$t1" "$t0")
  per_sorted="$(printf '%s\n' "${per[@]}" | sort -t= -k2 -g | awk -F= '{printf "%s%s=%.2fs/%sMiB", (NR>1?",":""), $1, $2, $3}')"
  du -sb "$WORK"/pull/t*/ 2>/dev/null | awk '{print "pulled oci layout bytes: " $0}' > "$WORK/logs/pull-size-n$n-r$rep.txt"
  printf 'registry\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$rep" "$wall" "" "$((tx1 - tx0))" "$per_sorted" >> "$RESULTS"
  log "B: N=$n ${wall}s, registry sent $(awk -v b=$((tx1 - tx0)) 'BEGIN{printf "%.1f", b/1048576}') MiB; per target (done at / received): $per_sorted"
  rm -rf "${WORK:?}/pull" && mkdir -p "$WORK/pull"
}


run_tcp_baseline
for n in $TARGETS; do
  for ((rep = 1; rep <= REPEAT; rep++)); do
    if has_case distribute; then run_stowage "$n" "$rep"; fi
    if has_case registry; then run_registry "$n" "$rep"; fi
  done
done
if has_case push; then
  for n in $PUSH_TARGETS; do for ((rep = 1; rep <= REPEAT; rep++)); do run_push "$n" "$rep"; done; done
fi
if has_case kill; then
  for n in $KILL_TARGETS; do for ((rep = 1; rep <= REPEAT; rep++)); do run_kill "$n" "$rep"; done; done
fi
echo "loadavg at end: $(cat /proc/loadavg)" >> "$OUT_DIR/environment.txt"

# --- table -----------------------------------------------------------------------------------------

node -e '
  const fs = require("fs");
  const [file, size, rate, bytes, regBytes, targets, repeat, load0, load1] = process.argv.slice(1);
  const rows = fs.readFileSync(file, "utf8").trim().split("\n").slice(1).map((l) => l.split("\t"));
  const median = (xs) => { if (xs.length === 0) return NaN; const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
  const pick = (c, n, col) => rows.filter((r) => r[0] === c && r[1] === String(n)).map((r) => Number(r[col]));
  const f2 = (x) => (Number.isFinite(x) ? x.toFixed(2) : "-");
  const ns = targets.trim().split(/\s+/).map(Number);
  const ideal = (Number(bytes) * 8) / (Number(rate) * 1e6);
  const tcp = median(pick("tcp", 1, 3));
  const s1 = median(pick("stowage", ns.includes(1) ? 1 : ns[0], 3));
  const lines = [];
  lines.push(`image ${size} MiB (${bytes} bytes in Stowage, ${regBytes} in the registry), uplink ${rate} mbit per machine, ` +
    `median of ${repeat} run(s); x_1copy = time / one copy at line rate (ideal_1copy_s ${f2(ideal)} s; measured over plain TCP in this run: tcp_1copy_s ${f2(tcp)} s)`);
  lines.push(`load average: ${load0} at the start, ${load1} at the end (2 cores shared with other work)`);
  const table = (head, body) => {
    const width = head.map((h, i) => Math.max(h.length, ...body.map((r) => String(r[i]).length)));
    const fmt = (r) => r.map((x, i) => (i === 0 ? String(x).padEnd(width[i]) : String(x).padStart(width[i]))).join("  ");
    lines.push(fmt(head));
    for (const r of body) lines.push(fmt(r));
    lines.push("");
  };
  const fanN = ns.filter((n) => rows.some((r) => (r[0] === "stowage" || r[0] === "registry") && r[1] === String(n)));
  if (fanN.length > 0) {
    table(
      ["N", "stowage_s", "stowctl_s", "registry_s", "ideal_1copy_s", "stowage_x_1copy", "stowage_x_tcp", "registry_x_1copy", "stowage/S1", "src_copies_out", "reg_copies_out"],
      fanN.map((n) => {
        const a = median(pick("stowage", n, 3)), w = median(pick("stowage", n, 4)), b = median(pick("registry", n, 3));
        const ca = median(pick("stowage", n, 5)) / Number(bytes), cb = median(pick("registry", n, 5)) / Number(regBytes);
        return [n, f2(a), f2(w), f2(b), f2(ideal), f2(a / ideal), f2(a / tcp), f2(b / ideal), f2(a / s1), f2(ca), f2(cb)];
      }),
    );
  }
  // Push and failure: one row per case and N; copies_out are what the machine that sent the image sent.
  const more = [];
  for (const [c, label, sender, limit] of [["push", "push, from the upload start", "stowctl", "<= 1.3"], ["kill", "distribute, mid-chain target SIGKILLed", "src", "<= 1.6"]]) {
    const cn = [...new Set(rows.filter((r) => r[0] === c).map((r) => Number(r[1])))];
    for (const n of cn) {
      const t = median(pick(c, n, 3)), w = median(pick(c, n, 4)), copies = median(pick(c, n, 5)) / Number(bytes);
      const notes = rows.filter((r) => r[0] === c && r[1] === String(n)).map((r) => r[7]).filter(Boolean);
      more.push([label, n, f2(t), f2(w), f2(t / ideal), f2(t / tcp), limit, `${f2(copies)} (${sender})`, notes[0] ?? ""]);
    }
  }
  if (more.length > 0) table(["case", "N", "seconds", "stowctl_s", "x_1copy", "x_tcp", "target", "copies_out", "note (first run)"], more);
  if (Number(repeat) > 1) {
    const range = (xs) => (xs.length ? `${Math.min(...xs).toFixed(2)}..${Math.max(...xs).toFixed(2)}` : "-");
    lines.push(`spread over ${repeat} runs (min..max seconds):`);
    for (const n of fanN) lines.push(`  N=${n}: stowage ${range(pick("stowage", n, 3))}, stowctl ${range(pick("stowage", n, 4))}, registry ${range(pick("registry", n, 3))}`);
    for (const c of ["push", "kill"]) for (const n of new Set(rows.filter((r) => r[0] === c).map((r) => r[1]))) lines.push(`  ${c} N=${n}: ${range(pick(c, n, 3))}`);
    lines.push("");
  }
  lines.push("copies_out: bytes the source (src), the registry or stowctl sent through its eth0 during the run, divided by the image size.");
  lines.push("per target: done at (s from the start; Stowage: from the operation created_at; registry: from launching skopeo) / MiB received on its eth0:");
  for (const r of rows.filter((r) => r[0] === "tcp")) lines.push(`  plain TCP, one copy: ${r[3]} s [${r[7]}]`);
  for (const r of rows.filter((r) => r[0] !== "tcp")) lines.push(`  ${r[0].padEnd(8)} N=${r[1]} rep ${r[2]}: ${r[6]}${r[7] ? "  [" + r[7] + "]" : ""}`);
  console.log(lines.join("\n"));
' "$RESULTS" "$SIZE" "$RATE" "$IMAGE_BYTES" "$REG_BYTES" "$TARGETS" "$REPEAT" "$LOAD0" "$(cat /proc/loadavg | cut -d' ' -f1-3)" | tee "$OUT_DIR/table.txt"
exit 0
}

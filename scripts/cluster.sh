#!/usr/bin/env bash
# A local mqtt-kv cluster: Mosquitto, N replicas and the monitor, with pids and logs under one
# run directory (default ./run; KV_RUN_DIR to change it, KV_PORT for the broker's port).
#
#   scripts/cluster.sh up [N] [--secure [--tls]] [--max-keys K] [--max-bytes SIZE]
#                         [--restore FILE]
#                                      start broker, N replicas (default 3) and the monitor;
#                                      resumes from the replicas' data when there is some.
#                                      Each serves Prometheus metrics: replica I on port
#                                      KV_METRICS_PORT+I (default 9460), the monitor on +N;
#                                      --max-keys/--max-bytes: the cluster's quota;
#                                      --restore: a new cluster from a snapshot
#                                      (kvclient snapshot save), not an empty one
#                                      --secure: passwords, the ACL (security/acl) and a
#                                      cluster key, made anew under run/secrets (0600);
#                                      --tls: the broker over TLS too, with a CA of its own;
#                                      and the live view, kvclient web (KV_WEB_PORT, 8080)
#   scripts/cluster.sh down [--wipe]   stop exactly what `up` started; keep the data unless --wipe
#   scripts/cluster.sh wipe            delete the replicas' data (the cluster must be down)
#   scripts/cluster.sh status          which processes are running
#   scripts/cluster.sh kill I [SIG]    send SIG (default KILL) to replica I
#   scripts/cluster.sh start I         start replica I again; it joins the running cluster
#   scripts/cluster.sh restart I       stop replica I and start it again (it re-joins)
#   scripts/cluster.sh kill-broker [SIG] / start-broker
#
# Every program reads the broker (and, secured, its user and password) from the environment:
# `source run/env` sets it for your shell, as the user `client`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
run=${KV_RUN_DIR:-$root/run}
port=${KV_PORT:-1884}
bin=$root/.venv/bin
export KV_BROKER=127.0.0.1:$port

secrets=$run/secrets

pidfile() { echo "$run/pids/$1.pid"; }
secure() { [ -f "$secrets/passwd" ]; }
tls() { [ -f "$secrets/tls/ca.crt" ]; }
random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

make_secrets() {  # make_secrets TLS: users replica, monitor and client with random passwords
  rm -rf "$secrets"
  mkdir -p "$secrets"
  chmod 700 "$secrets"
  (
    umask 077
    random_hex 32 >"$secrets/cluster.key"
    for user in replica monitor client; do
      password=$(random_hex 16)
      echo "$password" >"$secrets/$user.password"
      create=-c
      [ ! -f "$secrets/passwd" ] || create=
      # shellcheck disable=SC2086  # $create is one flag or none
      mosquitto_passwd $create -b "$secrets/passwd" "$user" "$password"
    done
  )
  if [ "$1" = yes ]; then bash "$root/scripts/tls-ca.sh" "$secrets/tls" >/dev/null; fi
}

as_user() {  # as_user USER COMMAND...: exec COMMAND with USER's credentials if secured.
  # It execs, so that spawn's pid is the program's own: `kill` must reach it, not a shell.
  local user=$1; shift
  if ! secure; then exec "$@"; fi
  local vars=("KV_USERNAME=$user" "KV_PASSWORD_FILE=$secrets/$user.password")
  [ "$user" = client ] || vars+=("KV_CLUSTER_KEY_FILE=$secrets/cluster.key")
  if tls; then vars+=("KV_TLS_CA=$secrets/tls/ca.crt"); fi
  exec env "${vars[@]}" "$@"
}
running() {  # running PID: exists and is not a zombie (a killed child nobody reaped yet)
  local state
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}
alive() { local f; f=$(pidfile "$1"); [ -f "$f" ] && running "$(cat "$f")"; }
count() { cat "$run/n" 2>/dev/null || echo 3; }

spawn() {  # spawn NAME COMMAND...: start in the background, pid and log under the run dir
  local name=$1; shift
  "$@" >>"$run/logs/$name.log" 2>&1 &
  echo $! >"$(pidfile "$name")"
}

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "cluster: the broker did not open port $port; see $run/logs/broker.log" >&2
  return 1
}

wait_log() {  # wait_log NAME TEXT: until the process logs TEXT (5 s at most)
  for _ in $(seq 100); do
    grep -q "$2" "$run/logs/$1.log" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "cluster: $1 did not report '$2'; see $run/logs/$1.log" >&2
  return 1
}

start_broker() {
  mkdir -p "$run/data"
  # Started as root, mosquitto drops to its own user, which cannot reach a data directory
  # under a private home (0700): every save would fail. A local cluster keeps root's rights.
  sed -e "s/^listener .*/listener $port 127.0.0.1/" \
      -e "s|^persistence_location .*|persistence_location $run/data/|" \
      "$root/mosquitto.conf" >"$run/mosquitto.conf"
  [ "$(id -u)" -ne 0 ] || echo "user root" >>"$run/mosquitto.conf"
  if secure; then
    sed -i '/^allow_anonymous /d' "$run/mosquitto.conf"
    printf 'allow_anonymous false\npassword_file %s\nacl_file %s\n' \
      "$secrets/passwd" "$root/security/acl" >>"$run/mosquitto.conf"
  fi
  if tls; then
    printf 'cafile %s\ncertfile %s\nkeyfile %s\n' \
      "$secrets/tls/ca.crt" "$secrets/tls/broker.crt" "$secrets/tls/broker.key" >>"$run/mosquitto.conf"
  fi
  spawn broker "$(command -v mosquitto || echo /usr/sbin/mosquitto)" -c "$run/mosquitto.conf"
  wait_port
}

data_dir() { echo "$run/replica-data/$1"; }
has_data() { compgen -G "$run/replica-data/*/replica.sqlite3" >/dev/null; }

metrics_base() { cat "$run/metrics-port" 2>/dev/null || echo "${KV_METRICS_PORT:-9460}"; }

start_replica() {  # start_replica I [--fresh]; every value mirrored on inf1406-kv/<key>
  local quota=()
  # shellcheck disable=SC2207  # the options `up` was given, one word each
  [ -s "$run/quota" ] && quota=($(cat "$run/quota"))
  spawn "replica-$1" as_user replica "$bin/kvserver" --id "$1" --n "$(count)" \
    --data-dir "$(data_dir "$1")" --mirror inf1406-kv \
    --metrics-port "$(($(metrics_base) + $1))" "${quota[@]}" "${@:2}"
}

wait_live() {  # wait_live N: until every replica is live (fresh, resumed or joined), 30 s
  local i waiting
  for _ in $(seq 600); do
    waiting=
    for i in $(seq 0 $(($1 - 1))); do
      grep -qE "starts fresh|resumes alone|joined at position" "$run/logs/replica-$i.log" \
        2>/dev/null || waiting="$waiting $i"
    done
    [ -z "$waiting" ] && return 0
    sleep 0.05
  done
  echo "cluster: replica(s)$waiting not live yet (kvclient status shows when; logs in $run/logs)" >&2
  return 1
}

stop_pid() {  # stop_pid NAME...: TERM to all at once, then KILL what is left after 3 s
  local name f pid pids=()
  for name in "$@"; do
    f=$(pidfile "$name")
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    if running "$pid"; then
      kill -CONT "$pid" 2>/dev/null || true
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
    rm -f "$f"
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 60); do running "$pid" || break; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
  done
}

case "${1:-}" in
  up)
    if alive broker; then echo "cluster: already up (scripts/cluster.sh down first)" >&2; exit 1; fi
    shift
    asked= with_secure=no with_tls=no quota=() restore=
    while [ $# -gt 0 ]; do
      case $1 in
        --secure) with_secure=yes ;;
        --tls) with_secure=yes with_tls=yes ;;
        --max-keys | --max-bytes) quota+=("$1" "${2:?$1 needs a value}"); shift ;;
        --restore) restore=$(realpath "${2:?--restore needs a snapshot file}"); shift ;;
        *) asked=$1 ;;
      esac
      shift
    done
    if has_data && [ -n "$restore" ]; then
      echo "cluster: $run holds a cluster's data; 'scripts/cluster.sh wipe' first to restore a snapshot into a new one" >&2
      exit 1
    fi
    if has_data; then
      n=$(count)
      if [ -n "$asked" ] && [ "$asked" != "$n" ]; then
        echo "cluster: $run holds the data of a $n-replica cluster; 'scripts/cluster.sh wipe'" \
          "first to start one of $asked" >&2
        exit 1
      fi
      fresh=()
    else
      n=${asked:-3}
      fresh=(--fresh)
      if [ -n "$restore" ]; then
        "$bin/kvclient" snapshot verify "$restore" >/dev/null || exit 2  # says what is wrong
        fresh=(--restore "$restore")
      fi
    fi
    rm -rf "$run/pids" "$run/logs" "$run/data"  # the broker starts without its saved state
    mkdir -p "$run/pids" "$run/logs" "$run/replica-data"
    echo "$n" >"$run/n"
    echo "${quota[*]}" >"$run/quota"
    echo "${KV_METRICS_PORT:-9460}" >"$run/metrics-port"
    rm -rf "$secrets"
    if [ "$with_secure" = yes ]; then make_secrets "$with_tls"; fi
    {
      echo "export KV_BROKER=$KV_BROKER"
      echo "export PATH=\"$bin:\$PATH\""  # kvclient, kvserver, kvmonitor by their names
      if secure; then
        echo "export KV_USERNAME=client KV_PASSWORD_FILE=$secrets/client.password"
      fi
      if tls; then echo "export KV_TLS_CA=$secrets/tls/ca.crt"; fi
    } >"$run/env"
    start_broker
    for i in $(seq 0 $((n - 1))); do start_replica "$i" "${fresh[@]}"; done
    for i in $(seq 0 $((n - 1))); do wait_log "replica-$i" "connected to"; done
    spawn monitor as_user monitor "$bin/kvmonitor" --n "$n" --metrics-port "$(($(metrics_base) + n))"
    wait_log monitor "watching"
    # The live view (kvclient web), as the user `client`: a busy port only costs the view.
    spawn web as_user client "$bin/kvclient" web --port "${KV_WEB_PORT:-8080}" --n "$n"
    wait_live "$n" || true  # up all the same: say so, and let the user watch them join
    if [ -n "$restore" ]; then how="a new cluster restored from $restore; data in $run/replica-data"
    elif [ "${#fresh[@]}" -eq 0 ]; then how="resumed from the data in $run/replica-data"
    else how="a new, empty cluster; data in $run/replica-data"; fi
    if tls; then how="$how; secured, over TLS"; elif secure; then how="$how; secured"; fi
    echo "cluster: broker on $KV_BROKER, $n replicas and a monitor ($how); logs in $run/logs"
    base=$(metrics_base)
    echo "cluster: metrics on http://127.0.0.1:$base/metrics to :$((base + n - 1)) (replica 0 to $((n - 1))), the monitor's on :$((base + n))"
    for _ in $(seq 40); do grep -q "view of" "$run/logs/web.log" 2>/dev/null && break; sleep 0.05; done
    if url=$(grep -o 'http://[^ ]*' "$run/logs/web.log" 2>/dev/null | head -1) && [ -n "$url" ]; then
      echo "cluster: the live view is at $url"
    else
      echo "cluster: no live view ($(tail -1 "$run/logs/web.log" 2>/dev/null)); KV_WEB_PORT=... to choose a port" >&2
    fi
    ;;
  wipe)
    if alive broker; then echo "cluster: running (scripts/cluster.sh down first)" >&2; exit 1; fi
    rm -rf "$run/replica-data"
    echo "cluster: data deleted"
    ;;
  down)
    names=()
    for f in "$run"/pids/*.pid; do
      [ -e "$f" ] || continue
      name=$(basename "$f" .pid)
      [ "$name" = broker ] || names+=("$name")
    done
    stop_pid "${names[@]}"  # the broker last: the others say goodbye through it
    stop_pid broker
    if [ "${2:-}" = --wipe ]; then
      rm -rf "$run/replica-data"
      echo "cluster: down, data deleted"
    else
      echo "cluster: down (data kept in $run/replica-data; 'scripts/cluster.sh wipe' deletes it)"
    fi
    ;;
  status)
    for f in "$run"/pids/*.pid; do
      [ -e "$f" ] || { echo "cluster: not running"; exit 1; }
      name=$(basename "$f" .pid)
      if alive "$name"; then state=running; else state=stopped; fi
      printf '%-12s %-8s pid %s\n' "$name" "$state" "$(cat "$f")"
    done
    ;;
  kill)
    f=$(pidfile "replica-${2:?replica id}")
    kill "-${3:-KILL}" "$(cat "$f")"
    ;;
  start | restart)
    if [ "$1" = restart ]; then
      stop_pid "replica-${2:?replica id}"
    elif alive "replica-${2:?replica id}"; then
      echo "cluster: replica $2 is running" >&2
      exit 1
    fi
    joins() { grep -c "joined at position" "$run/logs/replica-$2.log" 2>/dev/null || true; }
    before=$(joins "$@")
    start_replica "$2"
    for _ in $(seq 300); do  # 15 s
      [ "$(joins "$@")" -gt "$before" ] && { echo "cluster: replica $2 joined"; exit 0; }
      sleep 0.05
    done
    echo "cluster: replica $2 has not joined yet; see $run/logs/replica-$2.log" >&2
    exit 1
    ;;
  kill-broker)
    kill "-${2:-KILL}" "$(cat "$(pidfile broker)")"
    ;;
  start-broker)
    start_broker
    ;;
  *)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac

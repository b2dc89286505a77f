#!/usr/bin/env bash
# Chaos against a cluster started by scripts/cluster.sh: every T seconds, kill -9 or SIGSTOP a
# replica (random, or the one given), bring it back after R seconds, for D seconds in all.
# With --load, three clients run puts and gets beside it and a consistency report is printed
# at the end (every request answered, no acknowledged write lost, linearizable).
#
#   scripts/chaos.sh [--every T] [--restart-after R] [--duration D] [--replica I]
#                    [--signal KILL|STOP|mixed] [--load] [--clients C] [--shared]
#
# Defaults: T=5, R=2, D=60, random replica, mixed signals, no load, 3 clients; --shared: the
# clients share one connection, so their requests go in batches. Bounded in time; it
# stops the load it started and resumes any replica it stopped. Exit 1 if the report shows
# a problem.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
run=${KV_RUN_DIR:-$root/run}
every=5 restart_after=2 duration=60 replica="" sig=mixed load=0 clients=3 shared=""
while [ $# -gt 0 ]; do
  case "$1" in
    --every) every=$2; shift 2 ;;
    --restart-after) restart_after=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --replica) replica=$2; shift 2 ;;
    --signal) sig=$2; shift 2 ;;
    --load) load=1; shift ;;
    --clients) clients=$2; shift 2 ;;
    --shared) shared=--shared; shift ;;
    *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done
[ -f "$run/n" ] || { echo "chaos: no cluster under $run (scripts/cluster.sh up first)" >&2; exit 2; }
n=$(cat "$run/n")
source "$run/env"
cluster() { bash "$root/scripts/cluster.sh" "$@"; }
say() { echo "$(date +%H:%M:%S.%3N) $*"; }

load_pid=""
stopped=""
cleanup() {
  [ -n "$stopped" ] && cluster kill "$stopped" CONT 2>/dev/null || true
  [ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null || true
}
trap cleanup EXIT

if [ "$load" = 1 ]; then
  "$root/.venv/bin/kvclient" load --duration "$duration" --clients "$clients" $shared \
    >"$run/chaos-load.txt" 2>&1 &
  load_pid=$!
  say "load: $clients clients ${shared:+on one connection }for ${duration}s (pid $load_pid)"
fi

end=$((SECONDS + duration))
while [ $((SECONDS + every)) -le "$end" ]; do
  sleep "$every"
  victim=${replica:-$((RANDOM % n))}
  how=$sig
  [ "$how" = mixed ] && { [ $((RANDOM % 2)) = 0 ] && how=KILL || how=STOP; }
  if [ "$how" = KILL ]; then
    say "kill -9 replica $victim"
    cluster kill "$victim" KILL
    sleep "$restart_after"
    say "start replica $victim"
    if cluster start "$victim" >/dev/null; then
      say "replica $victim re-joined"
    else
      say "replica $victim has not re-joined yet (see $run/logs/replica-$victim.log)"
    fi
  else
    say "SIGSTOP replica $victim"
    cluster kill "$victim" STOP
    stopped=$victim
    sleep "$restart_after"
    cluster kill "$victim" CONT
    stopped=""
    say "SIGCONT replica $victim"
  fi
done

status=0
if [ -n "$load_pid" ]; then
  say "waiting for the load to finish and check the history"
  wait "$load_pid" || status=$?
  load_pid=""
  echo "--- consistency report"
  cat "$run/chaos-load.txt"
fi
say "chaos done"
exit "$status"

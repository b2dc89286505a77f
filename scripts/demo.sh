#!/usr/bin/env bash
# Set up, start a local 3-replica cluster (broker, replicas, monitor) and show a put and a get.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/cluster.sh up 3
run=${KV_RUN_DIR:-run}  # where cluster.sh keeps the cluster (its KV_RUN_DIR)
source "$run/env"
echo "\$ kvclient put greeting 'hello, world'"
.venv/bin/kvclient put greeting 'hello, world'
echo "\$ kvclient get greeting --json"
.venv/bin/kvclient get greeting --json
cat <<TXT

The cluster keeps running; watch it at http://127.0.0.1:${KV_WEB_PORT:-8080}/ (kvclient web).
Next:
  source $run/env                     # KV_BROKER=$KV_BROKER and .venv/bin on PATH, this shell
  kvclient get greeting
  kvclient watch                     # every value, then each change (Ctrl-C ends it); or
  mosquitto_sub -p ${KV_BROKER##*:} -t 'inf1406-kv/#' -v   # the same, with any MQTT client
  scripts/cluster.sh kill 0          # kill -9 a replica; its successor answers for it
  scripts/cluster.sh start 0         # it re-joins and takes its keys back
  scripts/cluster.sh down            # stop everything; the data stays in $run/replica-data
  scripts/cluster.sh up              # ... and comes back: every key is still there
  scripts/cluster.sh wipe            # delete the data
  scripts/cluster.sh up --secure     # passwords, an ACL and signed control messages; then
                                     # source $run/env again (it logs you in as 'client')
TXT

#!/usr/bin/env bash
# A self-signed CA and a broker certificate signed by it, for a TLS listener:
#
#   scripts/tls-ca.sh DIR [HOST]    writes DIR/ca.crt, DIR/broker.crt, DIR/broker.key
#
# HOST (default 127.0.0.1) is the name or address clients use to reach the broker; it goes in
# the certificate's subjectAltName, which clients check. Give ca.crt to every program
# (--tls-ca or KV_TLS_CA); the broker's listener takes all three (cafile, certfile, keyfile).
set -euo pipefail
dir=${1:?usage: scripts/tls-ca.sh DIR [HOST]}
host=${2:-127.0.0.1}
mkdir -p "$dir"
cd "$dir"
umask 077
if [[ $host =~ ^[0-9.]+$ || $host == *:* ]]; then san="IP:$host"; else san="DNS:$host"; fi
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.crt -days 825 -subj "/CN=mqtt-kv CA" \
  2>/dev/null
openssl req "${ec[@]}" -keyout broker.key -out broker.csr -subj "/CN=$host" 2>/dev/null
printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' \
  "$san" >broker.ext
openssl x509 -req -in broker.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
  -extfile broker.ext -out broker.crt 2>/dev/null
rm -f broker.csr broker.ext ca.srl
chmod 644 ca.crt broker.crt
echo "tls: CA $dir/ca.crt, broker certificate $dir/broker.crt for $san"

#!/usr/bin/env bash
# Make the secrets of a Corolla deployment: a CA, TLS certificates, SuperNode keys, SuperExec secrets.
#
#   docker/make-certs.sh [-n NODES] [-o DIR] [-H NAME_OR_IP]... [-u UID] [-f]
#
#   -n NODES  number of SuperNodes (default 2)
#   -o DIR    output folder (default: this script's folder, i.e. docker/); writes DIR/certs, DIR/keys
#   -H NAME   one more DNS name or IP address the SuperLink is dialled by (repeatable), e.g. the
#             host's public name when SuperNodes run on other machines
#   -u UID    chown the private files the containers mount to UID (Flower's images run as UID
#             49999; needs root): sudo docker/make-certs.sh -n 2 -u 49999
#   -f        regenerate everything (default: keep what exists, add what is missing, so `-n 4` after
#             `-n 2` adds two nodes under the same CA)
#
# Writes (private keys mode 600; nothing here is ever committed or baked into an image):
#   certs/ca.crt, certs/ca.key            the CA: every SuperNode, SuperExec and `flwr` CLI trusts ca.crt
#   certs/superlink.crt, .key             SuperLink TLS; SAN DNS:superlink, DNS:localhost, IP:127.0.0.1 (+ -H)
#   certs/supernode-<i>.crt, .key         SuperNode i's Runtime API TLS (its SuperExec dials it);
#                                         SAN DNS:supernode-<i>, DNS:localhost, IP:127.0.0.1
#   keys/supernode-<i>, .pub              SuperNode i's authentication key: ECDSA P-384, OpenSSH format
#                                         (register the .pub with `flwr supernode register`)
#   keys/superexec-secret-superlink       the SuperLink's Runtime API secret: only the ServerApp's SuperExec
#                                         (on the server machine) holds it
#   keys/superexec-secret-<i>             SuperNode i's Runtime API secret: only that node and its own
#                                         ClientApp SuperExec hold it, so a client machine holds no other
#                                         machine's secret
#
# A kept SuperLink certificate keeps its names: add -H names with -f. Needs openssl and ssh-keygen.
set -euo pipefail

nodes=2
out="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
force=0
extra=()
owner=""
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
while getopts "n:o:H:u:fh" opt; do
  case "$opt" in
    n) nodes="$OPTARG" ;;
    o) out="$OPTARG" ;;
    H) extra+=("$OPTARG") ;;
    u) owner="$OPTARG" ;;
    f) force=1 ;;
    h) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
if ! [[ "$nodes" =~ ^[1-9][0-9]*$ ]]; then
  echo "make-certs.sh: -n needs a positive integer, got '$nodes'" >&2
  exit 2
fi
for tool in openssl ssh-keygen; do
  command -v "$tool" >/dev/null || { echo "make-certs.sh: $tool not found" >&2; exit 1; }
done

certs="$out/certs"
keys="$out/keys"
mkdir -p "$certs" "$keys"
umask 077
days=825

san_entry() {  # a name -> "DNS:name" or "IP:addr"
  if [[ "$1" =~ ^[0-9.]+$ || "$1" == *:* ]]; then echo "IP:$1"; else echo "DNS:$1"; fi
}

exists() { [[ $force -eq 0 && -s "$1" ]]; }

if exists "$certs/ca.crt" && exists "$certs/ca.key"; then
  echo "keeping CA $certs/ca.crt"
else
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -sha384 -days "$days" \
    -subj "/CN=Corolla deployment CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$certs/ca.key" -out "$certs/ca.crt" 2>/dev/null
  chmod 644 "$certs/ca.crt"
  force=1  # a new CA invalidates every certificate signed by the old one
  echo "made CA $certs/ca.crt"
fi

server_cert() {  # name, SAN entries...
  local name="$1"; shift
  if exists "$certs/$name.crt" && exists "$certs/$name.key"; then
    echo "keeping $certs/$name.crt"
    return
  fi
  local san ext
  san="$(IFS=,; echo "$*")"
  ext="$(mktemp)"
  printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
    "$san" >"$ext"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -sha384 -subj "/CN=$name" \
    -keyout "$certs/$name.key" -out "$certs/$name.csr" 2>/dev/null
  openssl x509 -req -in "$certs/$name.csr" -CA "$certs/ca.crt" -CAkey "$certs/ca.key" -CAcreateserial \
    -days "$days" -sha384 -extfile "$ext" -out "$certs/$name.crt" 2>/dev/null
  rm -f "$ext" "$certs/$name.csr" "$certs/ca.srl"
  chmod 644 "$certs/$name.crt"
  echo "made $certs/$name.crt ($san)"
}

superlink_san=(DNS:superlink DNS:localhost IP:127.0.0.1)
for name in "${extra[@]+"${extra[@]}"}"; do
  superlink_san+=("$(san_entry "$name")")
done
server_cert superlink "${superlink_san[@]}"

for ((i = 1; i <= nodes; i++)); do
  server_cert "supernode-$i" "DNS:supernode-$i" DNS:localhost IP:127.0.0.1
  if exists "$keys/supernode-$i" && exists "$keys/supernode-$i.pub"; then
    echo "keeping $keys/supernode-$i"
  else
    rm -f "$keys/supernode-$i" "$keys/supernode-$i.pub"
    ssh-keygen -q -t ecdsa -b 384 -N "" -C "corolla-supernode-$i" -f "$keys/supernode-$i"
    chmod 644 "$keys/supernode-$i.pub"
    echo "made $keys/supernode-$i (register $keys/supernode-$i.pub with \`flwr supernode register\`)"
  fi
done

secret() {  # one Runtime API's SuperExec secret: 32 random bytes, hex
  if exists "$keys/superexec-secret-$1"; then
    echo "keeping $keys/superexec-secret-$1"
  else
    openssl rand -hex 32 | tr -d '\n' >"$keys/superexec-secret-$1"
    echo "made $keys/superexec-secret-$1"
  fi
}
secret superlink
for ((i = 1; i <= nodes; i++)); do
  secret "$i"
done

# the private files the containers mount (not ca.key: it stays with whoever signs certificates)
private=("$certs/superlink.key" "$keys/superexec-secret-superlink")
for ((i = 1; i <= nodes; i++)); do
  private+=("$certs/supernode-$i.key" "$keys/supernode-$i" "$keys/superexec-secret-$i")
done
if [[ -n "$owner" ]]; then
  chown "$owner:$owner" "${private[@]}"
  echo "private files owned by UID $owner"
else
  echo "Flower's containers run as UID 49999; on Linux make the mounted private files theirs:"
  echo "  sudo chown 49999:49999 ${private[*]}"
fi

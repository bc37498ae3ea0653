#!/usr/bin/env bash
# Makes a development CA and the certificates a local Gatehouse needs, with openssl.
# NOT for production: keys are unencrypted and the CA lives next to them.
#
#   deploy/dev-ca.sh OUT_DIR
#
# writes, in OUT_DIR (PEM; EC P-256 keys in PKCS#8):
#   ca.pem / ca-key.pem                  the CA (trusted by both planes)
#   control-plane.pem / -key.pem         server: localhost, 127.0.0.1, ::1, control-plane,
#                                        gatehouse-control-plane (the Helm release gatehouse)
#   data-plane.pem / -key.pem            server: localhost, 127.0.0.1, ::1, gatehouse.local
#   redis.pem / redis-key.pem            server: localhost, 127.0.0.1, ::1, redis (a trial Redis over TLS)
#   node.pem / node-key.pem              client, CN node.gatehouse   (role "node")
#   admin.pem / admin-key.pem            client, CN admin.gatehouse  (role "admin")
# Existing files are replaced. Set DAYS to change the lifetime (default 30).
set -euo pipefail

out=${1:?usage: deploy/dev-ca.sh OUT_DIR}
days=${DAYS:-30}
# Private keys, the CA's among them, readable by their owner alone.
umask 077
mkdir -p "$out"
cd "$out"

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

key ca-key.pem
openssl req -x509 -new -key ca-key.pem -sha256 -days "$days" -subj "/CN=Gatehouse dev CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.pem 2>/dev/null

# issue NAME CN USAGE SANS
issue() {
    local name=$1 cn=$2 usage=$3 sans=$4
    key "$name-key.pem"
    openssl req -new -key "$name-key.pem" -subj "/CN=$cn" -out "$name.csr" 2>/dev/null
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature"
        echo "extendedKeyUsage=$usage"
        if [ -n "$sans" ]; then echo "subjectAltName=$sans"; fi
    } > "$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -sha256 \
        -days "$days" -extfile "$name.ext" -out "$name.pem" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}

issue control-plane control-plane serverAuth \
    "DNS:localhost,DNS:control-plane,DNS:gatehouse-control-plane,IP:127.0.0.1,IP:::1"
issue data-plane gatehouse.local serverAuth "DNS:localhost,DNS:gatehouse.local,IP:127.0.0.1,IP:::1"
issue redis redis serverAuth "DNS:localhost,DNS:redis,IP:127.0.0.1,IP:::1"
issue node node.gatehouse clientAuth "DNS:node.gatehouse"
issue admin admin.gatehouse clientAuth "DNS:admin.gatehouse"
rm -f ca.srl
echo "certificates written to $out"

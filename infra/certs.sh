#!/bin/sh
# One local certificate authority and the server certificates compose needs for TLS in transit
# (PostgreSQL, Redis, MinIO). Usage: infra/certs.sh [DIR]   (default: ./certs; needs openssl)
# Every Veil service trusts DIR/ca.crt only; keep DIR/ca.key offline once the certificates exist.
set -eu
dir=${1:-certs}
days=${CERT_DAYS:-825}
mkdir -p "$dir"
cd "$dir"
if [ ! -f ca.key ]; then
    openssl req -x509 -newkey rsa:4096 -sha256 -nodes -days 3650 -keyout ca.key -out ca.crt \
        -subj "/CN=Veil local CA"
fi
for host in postgres redis minio; do
    openssl req -newkey rsa:2048 -sha256 -nodes -keyout "$host.key" -out "$host.csr" \
        -subj "/CN=$host"
    printf 'subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' \
        "$host" > "$host.ext"
    openssl x509 -req -in "$host.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" \
        -sha256 -extfile "$host.ext" -out "$host.crt"
    rm -f "$host.csr" "$host.ext"
done
# MinIO reads public.crt/private.key from its certs folder; PostgreSQL wants a private key that
# only its user can read (uid 999 in the official image).
mkdir -p minio/CAs
cp minio.crt minio/public.crt && cp minio.key minio/private.key && cp ca.crt minio/CAs/ca.crt
chmod 600 ./*.key minio/private.key
echo "certificates in $(pwd): ca.crt, postgres.*, redis.*, minio/"

#!/usr/bin/env bash
# Entrypoint of iaas-local/s3:1 (built by scripts/services.sh): moto's S3 server over HTTPS, for
# tests of S3 clients that verify TLS (pgBackRest 2.45 speaks S3 only over HTTPS).
#
# TLS is served by nginx (in the base image) in front of moto, which listens on 127.0.0.1 only.
# moto's own TLS (werkzeug's development server) closes every connection after one response and
# without a TLS close_notify; pgBackRest 2.45 with OpenSSL 3 then fails at random on "TLS error
# unexpected eof while reading" (seen here on stanza-create and repo-put). nginx keeps
# connections alive, frames every response and shuts TLS down properly, as real S3 does.
#
#   s3 (the default command)   serve. Environment, all optional:
#     IAAS_S3_HOSTNAME   the names clients reach the server by (comma-separated; default s3),
#                        e.g. its network alias. The certificate covers them, localhost and
#                        127.0.0.1. Clients must use path-style URLs (https://NAME/BUCKET/KEY):
#                        a bucket name is never read from the host name.
#     IAAS_S3_PORT       the HTTPS port (default 443; Docker lets an unprivileged user bind it)
#     IAAS_S3_BUCKETS    buckets to create on start (comma-separated)
#     IAAS_S3_REGION     the region those buckets are created in (default us-east-1)
#     IAAS_S3_CA_CERT, IAAS_S3_CA_KEY   a CA (PEM text) to sign the server certificate with, e.g.
#                        to keep one CA across restarts; by default a new CA is made on each start
#   Once the server answers and the buckets exist, it prints the CA certificate (PEM) and then
#   "iaas-s3: ready" on stderr, and creates /tmp/s3-ready (the image's health check); the CA
#   certificate is at /ca.pem, so a test runs
#       docker exec CONTAINER cat /ca.pem
#   and hands the PEM to its client (for iaas-local/postgres-ha:15: IAAS_S3_CA_PEM). Any access
#   key and secret are accepted (moto does not check signatures); objects live in memory and are
#   gone when the container stops. moto's access log keeps only the requests not answered 200
#   (pgBackRest's probes for missing files show as 404: expected).
#
# Any other command is run as given.
set -Eeo pipefail

die() { printf 'iaas-s3: error: %s\n' "$*" >&2; exit 1; }

readonly TLS_DIR=/var/lib/s3
readonly READY_FILE=/tmp/s3-ready
readonly MOTO_PORT=5001
readonly NGINX_DIR=/tmp/s3-nginx

# make_certificates: the CA (given or new) and a server certificate signed by it for every name in
# IAAS_S3_HOSTNAME. A CA certificate separate from the server's lets clients pin the CA (what
# repo1-storage-ca-file expects) while the server certificate names the host, as a real one would.
make_certificates() {
	local names="${IAAS_S3_HOSTNAME:-s3}" name san="" ext
	umask 077
	if [ -n "${IAAS_S3_CA_CERT:-}" ] || [ -n "${IAAS_S3_CA_KEY:-}" ]; then
		[ -n "${IAAS_S3_CA_CERT:-}" ] && [ -n "${IAAS_S3_CA_KEY:-}" ] ||
			die "IAAS_S3_CA_CERT and IAAS_S3_CA_KEY are given together or not at all"
		printf '%s\n' "$IAAS_S3_CA_CERT" >"$TLS_DIR/ca.pem"
		printf '%s\n' "$IAAS_S3_CA_KEY" >"$TLS_DIR/ca.key"
	else
		# EC P-256: created in milliseconds (an RSA key takes a noticeable part of the start).
		openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 \
			-days 3650 -subj "/CN=iaas-local S3 test CA" \
			-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
			-keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.pem" 2>/dev/null || die "cannot create the CA"
	fi
	for name in ${names//,/ }; do
		[[ "$name" =~ ^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$ ]] ||
			die "IAAS_S3_HOSTNAME: '$name' is not a host name"
		san+="DNS:$name,"
	done
	san+="DNS:localhost,IP:127.0.0.1"
	ext="$(mktemp)"
	printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
		"$san" >"$ext"
	openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 \
		-subj "/CN=${names%%,*}" -keyout "$TLS_DIR/server.key" -out "$TLS_DIR/server.csr" 2>/dev/null &&
		openssl x509 -req -in "$TLS_DIR/server.csr" -CA "$TLS_DIR/ca.pem" -CAkey "$TLS_DIR/ca.key" \
			-CAcreateserial -days 825 -sha256 -extfile "$ext" -out "$TLS_DIR/server.pem" 2>/dev/null ||
		die "cannot create the server certificate (is IAAS_S3_CA_KEY the key of IAAS_S3_CA_CERT?)"
	rm -f "$ext" "$TLS_DIR/server.csr"
	# Only the CA certificate is public: clients read it (docker exec ... cat /ca.pem).
	chmod 644 "$TLS_DIR/ca.pem"
}

# create_buckets PORT: once the server answers, create IAAS_S3_BUCKETS with a signed client
# (boto3, which moto depends on) through TLS verified by the CA, which also proves the
# certificate chain; then mark the server ready.
create_buckets() {
	local deadline=$((SECONDS + 60))
	# moto first (it takes a second or two to import), so nginx logs no refused connections.
	until (exec 3<>"/dev/tcp/127.0.0.1/$MOTO_PORT") 2>/dev/null; do
		((SECONDS < deadline)) || die "moto did not listen on 127.0.0.1:$MOTO_PORT within 60 s"
		sleep 0.1
	done
	python3 - "$1" <<-'PY'
		import os, sys, time
		import boto3, botocore.config, botocore.exceptions
		port = sys.argv[1]
		region = os.environ.get("IAAS_S3_REGION") or "us-east-1"
		buckets = [b for b in (os.environ.get("IAAS_S3_BUCKETS") or "").split(",") if b]
		s3 = boto3.client(
		    "s3", endpoint_url=f"https://localhost:{port}", region_name=region,
		    aws_access_key_id="iaas", aws_secret_access_key="iaas", verify="/var/lib/s3/ca.pem",
		    config=botocore.config.Config(s3={"addressing_style": "path"},
		                                  retries={"max_attempts": 1}))
		deadline = time.monotonic() + 60
		while True:
		    try:
		        s3.list_buckets()
		        break
		    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
		        # Not listening yet (nginx starting), or 502 (moto starting behind nginx).
		        if time.monotonic() > deadline:
		            sys.exit("iaas-s3: error: the server did not answer within 60 s")
		        time.sleep(0.1)
		for bucket in buckets:
		    kwargs = {} if region == "us-east-1" else {
		        "CreateBucketConfiguration": {"LocationConstraint": region}}
		    s3.create_bucket(Bucket=bucket, **kwargs)
		    print(f"iaas-s3: bucket {bucket} created ({region})", flush=True)
	PY
	# The CA in the log too, for a test that reads logs rather than files.
	cat /var/lib/s3/ca.pem >&2
	: >"$READY_FILE"
	echo "iaas-s3: ready" >&2
}

# write_nginx_config PORT: TLS on PORT, proxied to moto. Bodies stream both ways unbuffered and
# unbounded (pgBackRest uploads WAL segments and backup files of any size); everything nginx
# writes is under NGINX_DIR, so it runs as the image's unprivileged user.
write_nginx_config() {
	mkdir -p "$NGINX_DIR"
	cat >"$NGINX_DIR/nginx.conf" <<-CONF
		worker_processes 1;
		pid $NGINX_DIR/nginx.pid;
		error_log stderr warn;
		events { worker_connections 512; }
		http {
		  access_log off;
		  client_body_temp_path $NGINX_DIR/body;
		  proxy_temp_path $NGINX_DIR/proxy;
		  fastcgi_temp_path $NGINX_DIR/fastcgi;
		  uwsgi_temp_path $NGINX_DIR/uwsgi;
		  scgi_temp_path $NGINX_DIR/scgi;
		  server {
		    listen $1 ssl;
		    listen [::]:$1 ssl;
		    ssl_certificate $TLS_DIR/server.pem;
		    ssl_certificate_key $TLS_DIR/server.key;
		    ssl_protocols TLSv1.2 TLSv1.3;
		    client_max_body_size 0;
		    keepalive_timeout 60s;
		    keepalive_requests 10000;
		    location / {
		      proxy_pass http://127.0.0.1:$MOTO_PORT;
		      proxy_http_version 1.1;
		      proxy_set_header Host \$http_host;
		      proxy_request_buffering off;
		      proxy_buffering off;
		      proxy_read_timeout 300s;
		      proxy_send_timeout 300s;
		    }
		  }
		}
	CONF
}

run_s3() {
	local port="${IAAS_S3_PORT:-443}"
	[[ "$port" =~ ^[1-9][0-9]{0,4}$ ]] && ((port <= 65535)) || die "IAAS_S3_PORT must be 1-65535"
	((port != MOTO_PORT)) || die "IAAS_S3_PORT must not be $MOTO_PORT (moto listens there)"
	rm -f "$READY_FILE"
	make_certificates
	write_nginx_config "$port"
	# nginx replaces this shell, so it is the container's main process and receives docker stop's
	# SIGTERM itself; moto runs beside it, and should it exit, nginx is stopped too, so the
	# container ends rather than answering 502. The buckets are created from a background job.
	(
		moto_server --host 127.0.0.1 --port "$MOTO_PORT" 2>&1 | grep --line-buffered -v '" 200 -$' >&2 || true
		echo "iaas-s3: error: moto exited" >&2
		kill -TERM $$
	) &
	(create_buckets "$port" || { echo "iaas-s3: error: bucket creation failed" >&2; kill -TERM $$; }) &
	exec nginx -e stderr -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf" -g 'daemon off;'
}

case "${1:-s3}" in
s3) run_s3 ;;
*) exec "$@" ;;
esac

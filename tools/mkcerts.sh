#!/bin/sh
# Makes certificates for TLS between vmigrated hosts (tests, demo, a start
# for operators): a CA in DIR (made once), and for host NAME a directory
# DIR/NAME to give to `vmigrated --tls-dir`, holding ca.crt, cert.pem and
# key.pem. The host's certificate names NAME and every SAN given (IP
# addresses or DNS names): what peers dial it by.
#   usage: tools/mkcerts.sh DIR NAME [SAN...]
set -eu
[ $# -ge 2 ] || { echo "usage: $0 DIR NAME [SAN...]" >&2; exit 2; }
dir=$1 name=$2
shift 2
umask 077
mkdir -p "$dir/$name"
if [ ! -f "$dir/ca.crt" ]; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout "$dir/ca.key" -out "$dir/ca.crt" -days 3650 -subj "/CN=vmigrate CA" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi
san="DNS:$name"
for s in "$@"; do
	case $s in
	*[!0-9.:]*) san="$san,DNS:$s" ;;
	*) san="$san,IP:$s" ;;
	esac
done
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=critical,CA:FALSE\n' \
	"$san" >"$dir/$name/ext.cnf"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
	-keyout "$dir/$name/key.pem" -out "$dir/$name/req.csr" -subj "/CN=$name" 2>/dev/null
openssl x509 -req -in "$dir/$name/req.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
	-CAcreateserial -out "$dir/$name/cert.pem" -days 825 -extfile "$dir/$name/ext.cnf" 2>/dev/null
cp "$dir/ca.crt" "$dir/$name/ca.crt"
rm -f "$dir/$name/req.csr" "$dir/$name/ext.cnf"
chmod 644 "$dir/$name/cert.pem" "$dir/$name/ca.crt"

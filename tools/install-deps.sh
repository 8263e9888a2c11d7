#!/bin/sh
# Installs every Debian 12 package that vmigrate's build, tests, fuzzer,
# benchmarks and demo need. Run as root; safe to run again.
set -eu

PACKAGES="
	build-essential pkg-config git
	clang libclang-rt-14-dev
	liblz4-dev libzstd-dev libxxhash-dev libssl-dev openssl
	libvirt-dev librdmacm-dev libibverbs-dev libjson-c-dev
	iproute2 iptables procps bc
	libcurl4-openssl-dev etcd-server etcd-client
	scdoc groff-base
	libmicrohttpd-dev curl python3
	libinih-dev libsystemd-dev systemd util-linux
	qemu-system-x86 libvirt-daemon-system libvirt-clients
	busybox-static cpio gzip
"

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: run as root (apt-get needs it)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $PACKAGES

#!/bin/bash
# The end-to-end demo: boot a 1 GiB micro-VM whose guest dirties 400 MiB at
# 50 MiB/s, save it while paused, continue it in a new process from the
# file, and verify every page and the guest's progress counter there.
# (Live migration between two hosts replaces this when it lands.)
set -euo pipefail
build=${1:-build}
vmigrate="$build/vmigrate"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

if [ ! -e /dev/kvm ]; then
	echo "demo: /dev/kvm is missing; the micro-VM needs KVM" >&2
	exit 1
fi
echo "== boot a 1 GiB guest, 400 MiB working set dirtied at 50 MiB/s, for 3 s"
"$vmigrate" run --mem 1G --vcpus 2 --working-set 400M --dirty-rate 50M \
	--content random --duration 3 --verify --save "$dir/guest.ckpt"
ls -l "$dir/guest.ckpt"
echo "== continue it in a new process from the checkpoint, 2 s, then verify"
"$vmigrate" run --restore "$dir/guest.ckpt" --duration 2 --verify --json

# A small Linux guest for QEMU under TCG (stock Linux does not boot under
# this machine's nested KVM: ../../../shared/KVM-HERE.md), built into
# $BUILD/linux-guest and kept there between runs, made again only when its
# inputs change:
#   - Debian's kernel, unpacked from its package (apt-get download, then
#     dpkg-deb's file system unpacked in part: only boot/vmlinuz; never
#     installed), and the ELF image inside its bzImage where that image can
#     be entered through PVH: QEMU then loads it as it is, which saves the
#     five seconds TCG spends decompressing the bzImage (boot to init in
#     about 3 s here instead of 8).
#   - a busybox initramfs (busybox-static, cpio, gzip) with lib/linux_guest/
#     init and rigmem (a static C program built here with gcc), and some real
#     files of this machine (headers and shared libraries, $LINUX_GUEST_FILES_MIB
#     MiB) whose pages sit in the guest's page cache.
# In the guest, rigmem writes a random and a text file into tmpfs, fills a
# working set and dirties it at a set rate, prints "RIG ..." lines on the
# serial console (ttyS0) and answers requests on ttyS1 (see rigmem.c).
#
# Source this file; set BUILD first. linux_guest_build makes or finds the
# guest and sets LINUX_GUEST_KERNEL and LINUX_GUEST_INITRD. Where it cannot
# (no kernel package reachable, a tool missing) it returns 1 with the
# reason in LINUX_GUEST_WHY, for a SKIP line; where it breaks (a compile
# error, a package that does not unpack) it returns 2, for a FAIL line.
# linux_guest_cmdline gives the kernel's command line for a filling;
# linux_guest_qemu runs the guest in a plain QEMU (no libvirt), its console
# on stdout.

: "${BUILD:=build}"
: "${LINUX_GUEST_FILES_MIB:=16}"
LINUX_GUEST_SRC=$(realpath "$(dirname "${BASH_SOURCE[0]}")/linux_guest")
LINUX_GUEST_SELF=$(realpath "${BASH_SOURCE[0]}")
LINUX_GUEST_DIR=
LINUX_GUEST_KERNEL=
LINUX_GUEST_INITRD=
LINUX_GUEST_WHY=

# the ELF image inside a bzImage ($1), written to $2, if it has a PVH entry
# point (Xen ELF note 18, XEN_ELFNOTE_PHYS32_ENTRY); else status 1
linux_guest_unwrap() {
	python3 - "$1" "$2" <<'EOF'
import lzma, gzip, struct, sys, zlib
data = open(sys.argv[1], 'rb').read()
elf = None
for magic, unpack in ((b'\xfd7zXZ\x00', lambda b: lzma.LZMADecompressor().decompress(b)),
                      (b'\x1f\x8b\x08\x00', lambda b: zlib.decompressobj(31).decompress(b))):
    at = data.find(magic)
    while at >= 0 and elf is None:
        try:
            out = unpack(data[at:])
            if out[:4] == b'\x7fELF':
                elf = out
        except Exception:
            pass
        at = data.find(magic, at + 1)
    if elf:
        break
if elf is None or elf[4] != 2:
    sys.exit(1)
phoff, = struct.unpack_from('<Q', elf, 0x20)
phentsize, phnum = struct.unpack_from('<HH', elf, 0x36)
pvh = False
for i in range(phnum):
    ptype, _, off, _, _, filesz = struct.unpack_from('<IIQQQQ', elf, phoff + i * phentsize)
    if ptype != 4:              # PT_NOTE
        continue
    p = off
    while p + 12 <= off + filesz:
        namesz, descsz, ntype = struct.unpack_from('<III', elf, p)
        name = elf[p + 12:p + 12 + namesz].rstrip(b'\0')
        if name == b'Xen' and ntype == 18:
            pvh = True
        p += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
if not pvh:
    sys.exit(1)
open(sys.argv[2], 'wb').write(elf)
EOF
}

# the kernel: $LINUX_GUEST_DIR/kernel/{vmlinuz,vmlinux}, keyed by package and version
linux_guest_kernel() {
	local kdir=$LINUX_GUEST_DIR/kernel pkg ver key tmp deb
	pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n 1)
	ver=$([ -n "$pkg" ] && apt-cache policy "$pkg" 2>/dev/null | sed -n 's/^ *Candidate: //p')
	key="$pkg $ver"
	if [ -z "$pkg" ] || [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
		if [ -s "$kdir/key" ] && [ -s "$kdir/vmlinuz" ]; then
			echo "# linux_guest: apt knows no linux-image-amd64 now; using the kernel built before ($(cat "$kdir/key"))"
			return 0
		fi
		LINUX_GUEST_WHY="apt's lists name no linux-image-amd64 (run apt-get update)"
		return 1
	fi
	if [ "$(cat "$kdir/key" 2>/dev/null)" = "$key" ] && [ -s "$kdir/vmlinuz" ]; then
		return 0
	fi
	rm -rf "$kdir" && mkdir -p "$kdir" && tmp=$(mktemp -d "$LINUX_GUEST_DIR/dl.XXXXXX") || return 2
	deb=$(ls /var/cache/apt/archives/"${pkg}_${ver}"_amd64.deb 2>/dev/null | head -n 1)
	if [ -z "$deb" ]; then
		if ! (cd "$tmp" && apt-get -q -o APT::Sandbox::User=root download "$pkg=$ver") \
				>"$tmp/download.log" 2>&1; then
			LINUX_GUEST_WHY="cannot download $pkg $ver: $(tail -n 1 "$tmp/download.log")"
			rm -rf "$tmp"
			return 1
		fi
		deb=$(ls "$tmp"/*.deb | head -n 1)
	fi
	if ! dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" --wildcards './boot/vmlinuz-*' ||
			! mv "$tmp"/boot/vmlinuz-* "$kdir/vmlinuz"; then
		LINUX_GUEST_WHY="cannot unpack boot/vmlinuz from $deb"
		rm -rf "$tmp"
		return 2
	fi
	rm -rf "$tmp"
	linux_guest_unwrap "$kdir/vmlinuz" "$kdir/vmlinux" ||
		echo "# linux_guest: $pkg's image has no PVH entry; booting the bzImage (slower)"
	echo "$key" >"$kdir/key"
}

# what the initramfs is made of, as one hash: our sources, busybox, the host files chosen
linux_guest_files() {
	local half=$((LINUX_GUEST_FILES_MIB * 1024 * 1024 / 2))
	{
		find /usr/include -type f -name '*.h' -printf '%s %p\n' 2>/dev/null | sort -k 2 |
			awk -v max="$half" '{ if (t + $1 > max) exit; t += $1; print $2 }'
		find /usr/lib/x86_64-linux-gnu -maxdepth 1 -type f -name 'lib*.so.*' -printf '%s %p\n' 2>/dev/null |
			sort -k 2 | awk -v max="$half" '$1 < max / 4 { if (t + $1 > max) exit; t += $1; print $2 }'
	}
}

linux_guest_initrd() {
	local key root files
	files=$(linux_guest_files)
	key=$({ sha256sum "$LINUX_GUEST_SRC"/* "$LINUX_GUEST_SELF" /bin/busybox
		echo "$files" | xargs -r stat -c '%n %s %Y'; } | sha256sum | cut -d' ' -f1)
	if [ "$(cat "$LINUX_GUEST_DIR/initrd.key" 2>/dev/null)" = "$key" ] &&
			[ -s "$LINUX_GUEST_DIR/initrd.gz" ]; then
		return 0
	fi
	root=$LINUX_GUEST_DIR/root
	rm -rf "$root" "$LINUX_GUEST_DIR/initrd.key"
	LINUX_GUEST_WHY="cannot make the initramfs in $root"
	mkdir -p "$root"/bin "$root"/dev "$root"/proc "$root"/sys "$root"/data "$root"/files || return 2
	if ! gcc -std=c11 -O2 -Wall -Wextra -Werror -D_GNU_SOURCE -static \
			-o "$root/bin/rigmem" "$LINUX_GUEST_SRC/rigmem.c"; then
		LINUX_GUEST_WHY="gcc -static could not build rigmem.c"
		return 2
	fi
	cp /bin/busybox "$root/bin/busybox" && cp "$LINUX_GUEST_SRC/init" "$root/init" &&
		chmod 755 "$root/init" || return 2
	[ -n "$files" ] && { echo "$files" | xargs cp --parents -t "$root/files" || return 2; }
	(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -6) \
		>"$LINUX_GUEST_DIR/initrd.gz.tmp" &&
		mv "$LINUX_GUEST_DIR/initrd.gz.tmp" "$LINUX_GUEST_DIR/initrd.gz" || return 2
	LINUX_GUEST_WHY=
	rm -rf "$root"
	echo "$key" >"$LINUX_GUEST_DIR/initrd.key"
}

linux_guest_build() {
	local tool
	for tool in qemu-system-x86_64 busybox cpio gzip gcc python3 dpkg-deb apt-cache flock; do
		command -v "$tool" >/dev/null || { LINUX_GUEST_WHY="$tool is missing (tools/install-deps.sh)"; return 1; }
	done
	[ -x /bin/busybox ] && file_is_static /bin/busybox ||
		{ LINUX_GUEST_WHY="/bin/busybox is not busybox-static's (tools/install-deps.sh)"; return 1; }
	LINUX_GUEST_DIR=$(realpath -m "$BUILD/linux-guest")
	mkdir -p "$LINUX_GUEST_DIR" || { LINUX_GUEST_WHY="cannot make $LINUX_GUEST_DIR"; return 2; }
	# one builder at a time (the plain and the sanitized runs may share nothing, but two suites could)
	exec {LINUX_GUEST_LOCK}>"$LINUX_GUEST_DIR/.lock"
	flock "$LINUX_GUEST_LOCK"
	linux_guest_kernel && linux_guest_initrd
	local ret=$?
	flock -u "$LINUX_GUEST_LOCK"
	exec {LINUX_GUEST_LOCK}>&-
	[ $ret = 0 ] || { : "${LINUX_GUEST_WHY:=building the guest failed}"; return $ret; }
	LINUX_GUEST_KERNEL=$LINUX_GUEST_DIR/kernel/vmlinux
	[ -s "$LINUX_GUEST_KERNEL" ] || LINUX_GUEST_KERNEL=$LINUX_GUEST_DIR/kernel/vmlinuz
	LINUX_GUEST_INITRD=$LINUX_GUEST_DIR/initrd.gz
}

# true when the ELF file $1 asks for no program interpreter (statically linked)
file_is_static() {
	! readelf -l "$1" 2>/dev/null | grep -q 'Requesting program interpreter'
}

# linux_guest_cmdline RANDOM_MIB TEXT_MIB WORK_MIB RATE_MIB_PER_S
# pti=on although the (AMD) qemu64 CPU needs no PTI: each entry into the
# guest's kernel then reloads CR3, on which TCG flushes its software TLB.
# Debian 12's QEMU 7.2 loses stores made through TLB entries that were
# filled before a migration's dirty-bitmap sync (fixed in QEMU 9.0 by
# "physmem: Fix migration dirty bitmap coherency with TCG memory access");
# here, without PTI, about one live migration in ten of a guest dirtying
# 16 MiB/s over the 1 Gbit/s veth crashed its kernel on the destination, and
# none in 56 with it. rigmem enters the kernel after every page it rewrites
# and wakes every 2 ms for the same reason (rigmem.c, dirty_one).
linux_guest_cmdline() {
	echo "console=ttyS0 quiet panic=-1 mitigations=off pti=on rig.random=$1 rig.text=$2 rig.work=$3 rig.rate=$4"
}

# linux_guest_qemu MEM_MIB CMDLINE [QEMU ARGS...]: the guest in a plain QEMU
# under TCG, console on stdout, ttyS1 unconnected; ends when the guest powers off
linux_guest_qemu() {
	local mem=$1 cmdline=$2
	shift 2
	qemu-system-x86_64 -accel tcg -m "$mem" -nodefaults -nographic -no-reboot \
		-serial stdio -serial null -kernel "$LINUX_GUEST_KERNEL" -initrd "$LINUX_GUEST_INITRD" \
		-append "$cmdline" "$@"
}

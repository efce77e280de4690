#!/usr/bin/env bash
# Builds the xvs Debian package from binaries already built, with dpkg-deb.
#
#   scripts/mkdeb.sh BIN_DIR OUT_DIR [COMPRESSION]
#
# BIN_DIR holds xvsd, xvsadm, xvs-lab, xvs-bench and xvs-docgen (target/release
# for `make deb`, target/debug in the package test). Man pages and completions
# are generated from those binaries here; the rest comes from packaging/,
# configs/ and docs/. COMPRESSION is dpkg-deb's -Z (default xz; the test uses
# gzip). Prints the path of the .deb.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:?BIN_DIR}")
out=$(realpath -m "${2:?OUT_DIR}")
comp=${3:-xz}

for b in xvsd xvsadm xvs-lab xvs-bench xvs-docgen; do
    [ -x "$bin/$b" ] || { echo "mkdeb: $bin/$b missing (cargo build first)" >&2; exit 1; }
done
version=$("$bin/xvsd" --version | awk '{print $2}')
arch=$(dpkg --print-architecture)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/xvs
umask 022

# Binaries, without their DWARF (the symbol table stays, for backtraces).
install -d "$root/usr/sbin" "$root/usr/bin"
for b in xvsd xvsadm; do
    strip --strip-debug -o "$root/usr/sbin/$b" "$bin/$b"
done
for b in xvs-lab xvs-bench; do
    strip --strip-debug -o "$root/usr/bin/$b" "$bin/$b"
done
chmod 755 "$root"/usr/sbin/* "$root"/usr/bin/*
# ipvsadm's companion scripts: xvsadm runs -S / -R under these names.
ln -s xvsadm "$root/usr/sbin/xvsadm-save"
ln -s xvsadm "$root/usr/sbin/xvsadm-restore"

install -D -m 644 configs/xvsd.toml "$root/etc/xvs/xvsd.toml"
install -D -m 644 packaging/xvsd.service "$root/lib/systemd/system/xvsd.service"

# Man pages: generated from the clap definitions, written for the rest.
man=$root/usr/share/man
install -d "$man/man1" "$man/man5" "$man/man8"
"$bin/xvsd" --generate man > "$man/man8/xvsd.8"
"$bin/xvs-lab" --generate man > "$man/man1/xvs-lab.1"
"$bin/xvs-bench" --generate man > "$man/man1/xvs-bench.1"
for p in xvsadm.8 xvsadm-save.8 xvsadm-restore.8; do
    install -m 644 "packaging/man/$p" "$man/man8/$p"
done
install -m 644 packaging/man/xvsd.toml.5 "$man/man5/xvsd.toml.5"
find "$man" -type f -exec gzip -9n {} +

# Completions: clap_complete for the clap binaries, xvsadm's from its table.
bc=$root/usr/share/bash-completion/completions
zc=$root/usr/share/zsh/vendor-completions
install -d "$bc" "$zc"
for b in xvsd xvs-lab xvs-bench; do
    "$bin/$b" --generate bash > "$bc/$b"
    "$bin/$b" --generate zsh > "$zc/_$b"
done
"$bin/xvs-docgen" xvsadm-completion bash > "$bc/xvsadm"
"$bin/xvs-docgen" xvsadm-completion zsh > "$zc/_xvsadm"
# bash-completion loads a command's file by the command's name.
ln -s xvsadm "$bc/xvsadm-save"
ln -s xvsadm "$bc/xvsadm-restore"

doc=$root/usr/share/doc/xvs
install -d "$doc/examples"
install -m 644 packaging/copyright "$doc/copyright"
for f in README.md docs/ARCHITECTURE.md docs/DEVIATIONS.md; do
    gzip -9nc "$f" > "$doc/$(basename "$f").gz"
done
for f in configs/keepalived.conf configs/grafana-dashboard.json configs/prometheus.yml; do
    install -m 644 "$f" "$doc/examples/"
done
printf 'xvs (%s) unstable; urgency=medium\n\n  * Built from the xvs source tree.\n\n -- xvs <xvs@localhost>  %s\n' \
    "$version" "$(date -R -d @"${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")" |
    gzip -9n > "$doc/changelog.gz"
chmod -R u+rwX,go+rX,go-w "$root"

# Run-time dependencies: the shared libraries the binaries link (libc, libgcc)
# as dpkg-shlibdeps finds them, plus iproute2, which xvs-lab runs (`ip netns`).
install -d "$work/debian"
printf 'Source: xvs\n\nPackage: xvs\nArchitecture: any\n' > "$work/debian/control"
shlibs=$(cd "$work" && dpkg-shlibdeps -O -e xvs/usr/sbin/xvsd -e xvs/usr/sbin/xvsadm \
    -e xvs/usr/bin/xvs-lab -e xvs/usr/bin/xvs-bench 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
rm -rf "$work/debian"

install -d -m 755 "$root/DEBIAN"
install -m 755 packaging/postinst packaging/prerm packaging/postrm "$root/DEBIAN/"
echo /etc/xvs/xvsd.toml > "$root/DEBIAN/conffiles"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
    xargs -0 md5sum) > "$root/DEBIAN/md5sums"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: xvs
Version: $version
Architecture: $arch
Maintainer: xvs <xvs@localhost>
Installed-Size: $size
Depends: ${shlibs}, iproute2
Suggests: prometheus, grafana
Section: net
Priority: optional
Description: userspace IPVS: layer-4 load balancer on AF_XDP
 xvs does in userspace what Linux IPVS does in the kernel: an XDP program
 steers the frames of virtual services to AF_XDP sockets, where workers
 schedule new flows to real servers with the IPVS schedulers and rewrite them
 for NAT, DR, IPIP tunnel or FULLNAT. Everything else goes on to the kernel.
 .
 xvsd is the director (a hardened systemd service); xvsadm administers it
 with ipvsadm's commands, options and output, and is registered as an
 ipvsadm alternative. xvs-lab builds namespace labs, xvs-bench benchmarks.
CONTROL

install -d "$out"
deb=$out/xvs_${version}_${arch}.deb
dpkg-deb --root-owner-group -Z"$comp" --build "$root" "$deb" >/dev/null
echo "$deb"

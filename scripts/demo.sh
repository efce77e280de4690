#!/usr/bin/env bash
# make demo: the NAT lab on veths, real HTTP through the VIP, the listings, teardown.
set -euo pipefail
BIN=${BIN:-target/release}
LAB="$BIN/xvs-lab"
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

[ "$(id -u)" = 0 ] || { echo "make demo needs root (network namespaces, XDP)"; exit 1; }
trap 'say "tearing the lab down"; "$LAB" down nat >/dev/null 2>&1 || true' EXIT

say "bringing up the NAT lab: client -- director (xvsd) -- 3 real servers, in namespaces"
"$LAB" down nat >/dev/null 2>&1 || true
"$LAB" up nat --rs 3

export XVS_SOCKET=/run/xvs/lab/xvs-nat/xvsd.sock
say "10 HTTP requests from xvs-nat-client to the VIP http://10.77.0.100/ (rr scheduler)"
for i in $(seq 1 10); do
	who=$(ip netns exec xvs-nat-client curl -sS --max-time 5 http://10.77.0.100/)
	printf '  request %2d answered by %s\n' "$i" "$who"
done

say "xvsadm -L -n"
"$BIN/xvsadm" -L -n
say "xvsadm -L -n --stats"
"$BIN/xvsadm" -L -n --stats

#!/usr/bin/env bash
# scripts/image-rootfs.sh ARCH OUTDIR: the image's base filesystem for one
# architecture (amd64 or arm64), the way distroless builds one: Debian
# bookworm's own signed packages for ARCH, unpacked with dpkg-deb -x (no
# maintainer scripts run), then pruned. It holds iptables with the nft
# backend (iptables, iptables-save, iptables-restore and the ip6tables ones
# are links to xtables-nft-multi), the shared libraries and extensions it
# loads, the dynamic loader, netbase's /etc/protocols, /etc/services and
# /etc/ethertypes, and the CA bundle the responder's HTTPS clients need.
#
# apt runs with a state, cache, config and sources list of its own in a
# temporary directory: the host's apt configuration and dpkg database are
# only read from, never written (the one host file used is the Debian
# archive keyring, with which apt checks the Release files' signatures).
#
# The result is cached: OUTDIR.stamp records this script's digest and the
# package versions; while the digest matches, nothing is downloaded again.
# To take newer (security) updates, remove OUTDIR.stamp.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 ARCH OUTDIR" >&2
  exit 2
fi
arch=$1
out=$(realpath -m "$2")
case $arch in
  amd64) triplet=x86_64-linux-gnu ;;
  arm64) triplet=aarch64-linux-gnu ;;
  *) echo "image-rootfs: unsupported architecture $arch (amd64, arm64)" >&2; exit 2 ;;
esac

# The closure of xtables-nft-multi (and xtables-legacy-multi) by
# `apt-cache depends iptables`: libc6 brings the dynamic loader, libgcc-s1
# is what libc6 loads to unwind threads. gcc-12-base (libgcc-s1's
# dependency) holds only documentation and is left out.
packages=(
  iptables libxtables12 libip4tc2 libip6tc2 libnftnl11 libmnl0
  libnetfilter-conntrack3 libnfnetlink0 libc6 libgcc-s1
  netbase ca-certificates
)
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
mirror=${DEBIAN_MIRROR:-http://deb.debian.org}

recipe=$(sha256sum "$0" | cut -d' ' -f1)
stamp=$out.stamp
if [ -d "$out" ] && [ "$(head -n1 "$stamp" 2>/dev/null)" = "recipe $recipe" ]; then
  echo "image-rootfs: $out is up to date ($stamp)"
  exit 0
fi
for tool in apt-get dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "image-rootfs: needs $tool (Debian's apt and dpkg)" >&2; exit 1; }
done
if [ ! -r "$keyring" ]; then
  echo "image-rootfs: needs $keyring (apt-get install debian-archive-keyring)" >&2
  exit 1
fi

mkdir -p "$(dirname "$out")"
tmp=$(mktemp -d "$(dirname "$out")/.rootfs-$arch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
mkdir -p "$tmp/apt/parts" "$tmp/apt/sources.d" "$tmp/apt/preferences.d" "$tmp/apt/trusted.d" \
  "$tmp/state/lists/partial" "$tmp/cache/archives/partial" "$tmp/debs" "$tmp/root"
touch "$tmp/status"
# apt downloads as its unprivileged _apt user where that user can write.
chown _apt "$tmp/debs" "$tmp/state/lists/partial" "$tmp/cache/archives/partial" 2>/dev/null || true

for suite in "debian bookworm" "debian bookworm-updates" "debian-security bookworm-security"; do
  set -- $suite
  echo "deb [arch=$arch signed-by=$keyring] $mirror/$1 $2 main"
done > "$tmp/apt/sources.list"
# Read instead of /etc/apt/apt.conf: every directory apt would read or
# write is the temporary one (so no host apt.conf.d hook runs either).
cat > "$tmp/apt/apt.conf" <<EOF
Dir::Etc::main "/dev/null";
Dir::Etc::parts "$tmp/apt/parts";
Dir::Etc::sourcelist "$tmp/apt/sources.list";
Dir::Etc::sourceparts "$tmp/apt/sources.d";
Dir::Etc::preferences "/dev/null";
Dir::Etc::preferencesparts "$tmp/apt/preferences.d";
Dir::Etc::trusted "/dev/null";
Dir::Etc::trustedparts "$tmp/apt/trusted.d";
Dir::State "$tmp/state";
Dir::State::status "$tmp/status";
Dir::Cache "$tmp/cache";
Dir::Log "$tmp/log";
APT::Architecture "$arch";
APT::Architectures { "$arch"; };
Acquire::Languages "none";
EOF
export APT_CONFIG=$tmp/apt/apt.conf
echo "image-rootfs: apt-get update (bookworm, $arch)"
apt-get -q=2 update
echo "image-rootfs: apt-get download ${packages[*]}"
(cd "$tmp/debs" && apt-get -q=2 download "${packages[@]}")

# The package versions go into the stamp and, for image scanners, into
# var/lib/dpkg/status.d/ (as distroless records them).
versions=()
mkdir -p "$tmp/root/var/lib/dpkg/status.d"
for deb in "$tmp"/debs/*.deb; do
  name=$(dpkg-deb -f "$deb" Package)
  versions+=("$name $(dpkg-deb -f "$deb" Version) $(dpkg-deb -f "$deb" Architecture)")
  dpkg-deb -x "$deb" "$tmp/root"
  { dpkg-deb -f "$deb" | sed '/^Description:/,$d'; echo "Status: install ok installed"; } \
    > "$tmp/root/var/lib/dpkg/status.d/$name"
done

cd "$tmp/root"
# Merged /usr, as a bookworm system has it: /lib, /lib64, /bin and /sbin are
# links into /usr (the packages still ship some files under /lib).
for d in bin sbin lib lib64; do
  if [ -d "$d" ] && [ ! -L "$d" ]; then
    mkdir -p "usr/$d"
    cp -a "$d/." "usr/$d/"
    rm -rf "$d"
  fi
  if [ -d "usr/$d" ]; then
    ln -s "usr/$d" "$d"
  fi
done

# The CA bundle update-ca-certificates would have made; then the prune.
mkdir -p etc/ssl/certs
cat usr/share/ca-certificates/mozilla/*.crt > etc/ssl/certs/ca-certificates.crt
rm -rf usr/share usr/bin usr/libexec usr/lib/locale etc/ca-certificates* "usr/lib/$triplet/gconv" "usr/lib/$triplet/audit"
# Of the programs only the two multi-call binaries stay (not iptables-apply,
# a bash script; nor ldconfig, iconvconfig, zic, nfnl_osf).
find usr/sbin -maxdepth 1 -type f ! -name 'xtables-*-multi' -delete
find usr/sbin -maxdepth 1 -xtype l -delete
# libc6's libraries that neither iptables nor an extension needs (no
# DT_NEEDED names them; libmvec alone is 1 MB).
rm -f "usr/lib/$triplet"/{libmvec,libnsl,libmemusage,libpcprofile,libc_malloc_debug,libthread_db,libBrokenLocale,libSegFault}.so*

# What the alternatives postinst would link.
for t in iptables ip6tables; do
  for s in "" -save -restore; do
    ln -sf xtables-nft-multi "usr/sbin/$t$s"
  done
done
for f in usr/sbin/xtables-nft-multi "usr/lib/$triplet/xtables/libxt_comment.so" etc/protocols etc/ethertypes; do
  [ -e "$f" ] || { echo "image-rootfs: $f missing after the prune" >&2; exit 1; }
done

# Root's accounts (for tools that name users), and the runtime directories.
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' > etc/passwd
printf 'root:x:0:\nnogroup:x:65534:\n' > etc/group
mkdir -p run tmp var/lib/metabind root
chmod 1777 tmp
chmod 700 root
cd - >/dev/null

rm -rf "$out"
mv "$tmp/root" "$out"
{ echo "recipe $recipe"; printf '%s\n' "${versions[@]}"; } > "$stamp"
echo "image-rootfs: $out: $(du -sh "$out" | cut -f1), $(printf '%s, ' "${versions[@]}" | sed 's/, $//')"

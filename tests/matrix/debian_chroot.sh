#!/usr/bin/env bash
# Runs the README's `make test` on another Debian's QGIS, in a chroot built with debootstrap.
#
#   tests/matrix/debian_chroot.sh trixie        # Debian 13: QGIS 3.40 LTR, Python 3.13
#   tests/matrix/debian_chroot.sh sid           # Debian unstable: QGIS 3.44, Python 3.14
#   tests/matrix/debian_chroot.sh trixie bare   # a user's QGIS: the plugin zip and its installer
#
# The chroot (a minimal Debian with make, git and certificates) is built once and kept in
# $MATRIX_CACHE/<suite> (default /var/cache/s2masks-matrix); what `make setup` installs into it
# (QGIS and friends) stays there too, so later runs only pay for pip and the tests. Each run
# copies the checkout's files (tracked and untracked, not ignored: what a fresh clone plus your
# uncommitted work would hold) into a new folder inside the chroot and runs `make test` there.
#
# `bare` is another chroot, $MATRIX_CACHE/<suite>-bare, with nothing but Debian's qgis,
# python3-qgis, qgis-providers and python3-pip: no pip package, no venv. It gets dist/s2masks.zip
# and a stack of the test scene made on this host, and tests/matrix/install_from_zip.sh runs there.
# Needs root (debootstrap, chroot, mount). The host's apt mirror, pip configuration, DNS and
# CA bundle are copied in, so the chroot reaches the same package registries as the host.
set -euo pipefail

suite=${1:?usage: $0 SUITE [bare]  (SUITE: trixie or sid)}
mode=${2:-test}
repo=$(cd "$(dirname "$0")/../.." && pwd)
root=${MATRIX_CACHE:-/var/cache/s2masks-matrix}/$suite
base_packages=(make git ca-certificates python3)
if [ "$mode" = bare ]; then
  root=$root-bare
  base_packages=(ca-certificates qgis python3-qgis qgis-providers python3-pip)
fi
mirror=$(awk '/^URIs:/ && /debian\/?$/ {print $2; exit} /^deb / && $2 !~ /security/ {print $2; exit}' \
         /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
apt_options=()
[ "$suite" = sid ] && apt_options=(-o Acquire::Check-Valid-Until=false)

in_chroot() { chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
                      PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 "$@"; }

mounted=()
cleanup() {
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -R "${mounted[i]}" 2>/dev/null || umount -lR "${mounted[i]}" || true; done
}
trap cleanup EXIT

copy_host_config() {
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  mkdir -p "$root/etc/ssl/certs" && cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  [ -f /etc/pip.conf ] && cp /etc/pip.conf "$root/etc/pip.conf"
  [ -d /etc/xdg/pip ] && mkdir -p "$root/etc/xdg" && cp -r /etc/xdg/pip "$root/etc/xdg/"
  if [ "$suite" = sid ]; then
    printf 'deb %s sid main\n' "$mirror" > "$root/etc/apt/sources.list"
    echo 'Acquire::Check-Valid-Until "false";' > "$root/etc/apt/apt.conf.d/99no-valid-until"
  else
    security=${mirror%/debian}/debian-security
    printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
      "$mirror" "$suite" "$mirror" "$suite" "$security" "$suite" > "$root/etc/apt/sources.list"
  fi
}

if [ ! -e "$root/.s2masks-ready" ]; then
  command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; }
  echo "Building a $suite chroot in $root (once; about 2 minutes) from $mirror"
  rm -rf "$root" && mkdir -p "$root"
  debootstrap --variant=minbase "$suite" "$root" "$mirror" > "$root.debootstrap.log" 2>&1 \
    || { tail -20 "$root.debootstrap.log"; exit 1; }
  copy_host_config
  in_chroot apt-get "${apt_options[@]}" update -qq
  in_chroot env DEBIAN_FRONTEND=noninteractive apt-get "${apt_options[@]}" install -y -qq --no-install-recommends \
    "${base_packages[@]}" > /dev/null
  touch "$root/.s2masks-ready"
fi
copy_host_config

for fs in proc sys dev; do
  mkdir -p "$root/$fs"
  mount --rbind "/$fs" "$root/$fs" && mount --make-rslave "$root/$fs"
  mounted+=("$root/$fs")
done

if [ "$mode" = bare ]; then
  work=$root/work/bare
  rm -rf "$work" && mkdir -p "$work"
  (cd "$repo" && make -s package && .venv/bin/python tests/matrix/make_test_stack.py "$work")
  cp "$repo/dist/s2masks.zip" "$repo/tests/matrix/install_from_zip.sh" "$work/"
  echo "== the plugin zip and its installer on a bare QGIS, Debian $suite"
  in_chroot sh /work/bare/install_from_zip.sh /work/bare
  exit
fi

work=$root/work/s2masks
rm -rf "$work" && mkdir -p "$work"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf -) | tar -xf - -C "$work"
echo "== make test on Debian $suite ($(in_chroot sh -c '. /etc/os-release; echo "$PRETTY_NAME"'))"
in_chroot sh -c "cd /work/s2masks && make test"

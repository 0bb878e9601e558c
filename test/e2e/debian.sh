# Sourced by the scripts that make a Debian tree: the images' base (node/images.sh), the real node's
# disk (node/rootfs.sh) and kind's node image (kind/up.sh).
# debian_tree DEST PACKAGES: bookworm minbase plus PACKAGES (comma-separated), slim as Debian's own slim
# images: no documentation, manual pages or translations (copyright files and locale.alias stay); /usr
# merged by mmdebstrap's hook, as the usrmerge package would bring Perl (55 MB).
debian_tree() {
  timeout 1200 mmdebstrap --variant=minbase --include="$2" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/groff/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    bookworm "$1" \
    "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian bookworm-updates main" \
    "deb http://deb.debian.org/debian-security bookworm-security main"
}

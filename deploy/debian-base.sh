#!/bin/bash
# A base image for deploy/Dockerfile built from Debian's own packages, for machines that reach
# Debian's mirrors but no container registry (no `docker pull python:3.11-slim`):
#
#     deploy/debian-base.sh localhost/gmpsim-base:bookworm
#     podman build --pull=never --build-arg BASE=localhost/gmpsim-base:bookworm -f deploy/Dockerfile -t gmpsim .
#
# (with Docker: `docker build --build-arg BASE=...`; the script imports with podman if it has it,
# else docker.) Debian 12 "bookworm": python3 is 3.11, as in python:3.11-slim. The apt sources are the
# ones this machine's apt uses (/etc/apt/sources.list.d/*.sources, or /etc/apt/sources.list), so a
# local mirror or snapshot keeps working. Two customize hooks: Debian's pip refusal
# (EXTERNALLY-MANAGED, PEP 668) is removed, as the image is a single-purpose one; the machine's own
# CA certificates (/usr/local/share/ca-certificates/*.crt) are added, so that pip in the build trusts
# a TLS-intercepting proxy the machine trusts. Needs root and mmdebstrap (apt-get install mmdebstrap).
# ~60-75 s on an idle machine (4 min on a loaded one), ~250 MB.
set -euo pipefail
tag=${1:?usage: deploy/debian-base.sh TAG}
suite=${GMPSIM_BASE_SUITE:-bookworm}
set --
for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list; do
    [ -s "$f" ] && set -- "$@" "$f"
done
if command -v podman >/dev/null 2>&1; then engine=podman; else engine=docker; fi
# The tarball goes straight from mmdebstrap into the image store (no copy on disk).
mmdebstrap --quiet --variant=minbase --format=tar \
    --include=python3,python3-pip,python-is-python3,ca-certificates \
    --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
    --customize-hook='if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then cp /usr/local/share/ca-certificates/*.crt "$1"/usr/local/share/ca-certificates/; fi' \
    --customize-hook='chroot "$1" update-ca-certificates --fresh >/dev/null 2>&1' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    "$suite" - "$@" \
  | "$engine" import --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' - "$tag" >/dev/null
echo "$tag"

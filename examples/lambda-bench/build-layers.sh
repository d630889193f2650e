#!/usr/bin/env bash
# Build the Lambda layers of template.yaml from the package registry's wheels: one layer per
# Python version and architecture, into layers/python<version>-<arch>/python/.
#
# Compiled drivers (psycopg2-binary, psycopg[binary], asyncpg) come as manylinux wheels for
# the target (pip --platform ... --only-binary=:all:), so the layers build on any machine,
# x86_64 or arm64, without Docker. warmdb itself is built as a wheel from this checkout.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: build-layers.sh [--python "3.12 3.13"] [--arch "x86_64 arm64"] [--without-aurora]
                       [--dry-run] [-h|--help]

Builds layers/python<version>-<arch>/python/ for template.yaml:
  warmdb (this checkout) with psycopg, psycopg2, asyncpg and SQLAlchemy, and
  aurora-dsql-python-connector 0.2.7 for the side-by-side baseline (--without-aurora: not).

  --python LIST      Python versions (default "3.12 3.13")
  --arch LIST        architectures (default "x86_64 arm64")
  --without-aurora   leave the official connector (and boto3) out
  --dry-run          print the commands, run none (nothing is downloaded)

Environment: PIP, the pip command (default "python3 -m pip").
USAGE
}

PYTHONS="3.12 3.13"
ARCHS="x86_64 arm64"
AURORA=1
DRY_RUN=0
while [ $# -gt 0 ]; do
    case "$1" in
        --python) PYTHONS="${2:?--python needs a value}"; shift 2 ;;
        --arch) ARCHS="${2:?--arch needs a value}"; shift 2 ;;
        --without-aurora) AURORA=0; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "build-layers.sh: error: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

read -r -a PIP_CMD <<< "${PIP:-python3 -m pip}"
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
WHEELS="$HERE/build/wheels"

run() {
    echo "+ $*"
    if [ "$DRY_RUN" = 0 ]; then "$@"; fi
}

platforms() {
    case "$1" in
        x86_64) echo "manylinux2014_x86_64 manylinux_2_28_x86_64" ;;
        arm64) echo "manylinux2014_aarch64 manylinux_2_28_aarch64" ;;
        *) echo "build-layers.sh: error: unknown architecture $1 (x86_64 or arm64)" >&2; exit 2 ;;
    esac
}

run "${PIP_CMD[@]}" wheel --no-deps --wheel-dir "$WHEELS" "$ROOT"
WHEEL="$WHEELS/warmdb-0-py3-none-any.whl"
if [ "$DRY_RUN" = 0 ]; then
    WHEEL="$(ls -t "$WHEELS"/warmdb-*.whl | head -n 1)"
fi
REQUIREMENTS=("warmdb[psycopg,psycopg2,asyncpg,sqlalchemy] @ file://$WHEEL")
if [ "$AURORA" = 1 ]; then
    REQUIREMENTS+=("aurora-dsql-python-connector==0.2.7")
fi

for python in $PYTHONS; do
    for arch in $ARCHS; do
        target="$HERE/layers/python$python-$arch/python"
        platform_args=()
        for platform in $(platforms "$arch"); do platform_args+=(--platform "$platform"); done
        run rm -rf "$target"
        # --no-compile: bytecode must come from the target's Python version, not this one.
        run "${PIP_CMD[@]}" install --target "$target" --no-compile --only-binary=:all: \
            --implementation cp --python-version "$python" "${platform_args[@]}" \
            "${REQUIREMENTS[@]}"
    done
done
echo "layers ready under $HERE/layers (sam build && sam deploy --guided)"

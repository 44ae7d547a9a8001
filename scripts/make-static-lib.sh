#!/usr/bin/env bash
# Assembles libpocketsam.a: the C ABI and the Swift runtime it needs in one static archive, so a C program links
# with `cc app.c libpocketsam.a` plus system libraries only (SYSTEM_LIBS in the Makefile lists them).
#
# usage: scripts/make-static-lib.sh BUILD OUT
#   BUILD  SwiftPM's products folder after `swift build -c release --product PocketSAMC` (.build/release)
#   OUT    the archive to write (written whole, never updated in place)
#
# How:
#  1. `ld -r` (one relocatable object) of the toolchain's swiftrt.o (its constructor registers the image's Swift
#     metadata sections; no symbol refers to it, so as an archive member a linker would never pull it in), every
#     object of the PocketSAMC product, and whatever members of the toolchain's static Swift archives
#     (lib/swift_static/linux/*.a) those objects need. The objects come from SwiftPM's list for the product
#     (PocketSAMC.product/Objects.LinkFileList), not from libPocketSAMC.a: SwiftPM updates that archive in place
#     (`llvm-ar crs`), so an object whose source was deleted stays in it.
#  2. objcopy keeps as global symbols only the functions of include/pocketsam.h and makes every other definition
#     local (Swift runtime, libdispatch, the kernels), so they cannot clash with a program's own Swift runtime or
#     C++ code. It drops the COMDAT groups (a program's copy of the same inline C++ function must not replace ours,
#     which is local now) and renames the Swift metadata sections swift5_* to psam_swift5_* with the symbols that
#     bound them, so our runtime registers only our metadata and a program's own Swift runtime only its own.
#  3. `ar rcs` of that one object.
# Needs swiftc on PATH (to find the toolchain; or SWIFT_STATIC=<toolchain>/usr/lib/swift_static/linux), a C
# compiler ($CC, to preprocess the header), and binutils (ld, objcopy, ar).
set -euo pipefail
export LC_ALL=C  # the same glob order everywhere
if [ $# -ne 2 ]; then
  echo "usage: $0 BUILD OUT" >&2
  exit 64
fi
build=$1
out=$2
root=$(cd "$(dirname "$0")/.." && pwd)
header="$root/include/pocketsam.h"
list="$build/PocketSAMC.product/Objects.LinkFileList"
if [ ! -f "$list" ]; then
  echo "make-static-lib: $list not found: build the product first (swift build -c release --product PocketSAMC)" >&2
  exit 1
fi
if [ -z "${SWIFT_STATIC:-}" ]; then
  swiftc=$(command -v swiftc) || { echo "make-static-lib: swiftc not on PATH (or set SWIFT_STATIC)" >&2; exit 1; }
  SWIFT_STATIC="$(dirname "$(readlink -f "$swiftc")")/../lib/swift_static/linux"
fi
swiftrt="$SWIFT_STATIC/$(uname -m)/swiftrt.o"
if [ ! -f "$swiftrt" ]; then
  echo "make-static-lib: $swiftrt not found: SWIFT_STATIC=$SWIFT_STATIC is not a Swift toolchain's static folder" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The API: every psam_ function the header declares (comments and macros gone after preprocessing).
"${CC:-cc}" -E -P -x c "$header" | grep -oE '\bpsam_[A-Za-z0-9_]+[[:space:]]*\(' | sed -E 's/[[:space:]]*\($//' \
  | sort -u >"$work/api.txt"
[ -s "$work/api.txt" ] || { echo "make-static-lib: no psam_ function found in $header" >&2; exit 1; }

# 1. One relocatable object. The archives form one group: ld takes only the members something refers to.
"${LD:-ld}" -r -o "$work/all.o" "$swiftrt" "@$list" --start-group "$SWIFT_STATIC"/*.a --end-group

# 2. Hide everything but the API; private metadata sections.
args=(--keep-global-symbols="$work/api.txt" --remove-section=.group)
for s in $(nm -u "$work/all.o" | sed -n 's/^ *U __start_\(swift5_[A-Za-z0-9_]*\)$/\1/p'); do
  args+=(--rename-section "$s=psam_$s" --redefine-sym "__start_$s=__start_psam_$s" --redefine-sym "__stop_$s=__stop_psam_$s")
done
if [ ${#args[@]} -lt 5 ]; then
  echo "make-static-lib: no __start_swift5_* reference in the object: is swiftrt.o in it?" >&2
  exit 1
fi
"${OBJCOPY:-objcopy}" "${args[@]}" "$work/all.o" "$work/pocketsam.o"

# 3. The archive, written whole and moved into place.
"${AR:-ar}" rcs "$work/libpocketsam.a" "$work/pocketsam.o"
mkdir -p "$(dirname "$out")"
mv "$work/libpocketsam.a" "$out"
echo "make-static-lib: $out ($(du -k "$out" | cut -f1) KiB, $(wc -l <"$work/api.txt") API functions)"

#!/usr/bin/env bash
# Cross-compiles the kernel library (Sources/PocketSAMKernels) and every kernel test program (Tests/KernelTests) for
# aarch64 with Debian's gcc-aarch64-linux-gnu (-O2 -Werror) and runs each under qemu-aarch64 on three CPU models:
#   cortex-a53  ARMv8.0: NEON without the dot product (Raspberry Pi 3, Zero 2, i.MX 8M; the A72 of the Pi 4 alike)
#   cortex-a76  ARMv8.2: dot product and FP16 arithmetic (Raspberry Pi 5, RK3588)
#   max         everything qemu emulates, I8MM and BF16 included (ARMv8.6+: Graviton 3, Cortex-A710/X2)
# Each run prints which variant of each kernel it exercised; the script checks that each CPU model got the variant
# its features call for (e.g. the ARMv8.0 NEON int8 GEMM on cortex-a53, not the scalar one) and that every test
# passed. The three CPU models run in parallel. Usage: scripts/test-arm.sh [cpu ...] (default: the three above).
# Needs gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user (scripts/install-deps.sh installs them).
set -uo pipefail
cd "$(dirname "$0")/.."
CC=${ARM_CC:-aarch64-linux-gnu-gcc}
QEMU=${QEMU:-$(command -v qemu-aarch64 || command -v qemu-aarch64-static || echo qemu-aarch64)}
SYSROOT=${ARM_SYSROOT:-/usr/aarch64-linux-gnu}
cpus=("$@")
[ ${#cpus[@]} -gt 0 ] || cpus=(cortex-a53 cortex-a76 max)
for tool in "$CC" "$QEMU"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "test-arm: $tool is missing (scripts/install-deps.sh installs it)" >&2; exit 2; }
done

S=Sources/PocketSAMKernels
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
flags=(-O2 -std=c11 -Wall -Wextra -Werror -I "$S/include")

# The library once, then each test program linked against it.
objs=()
for src in "$S"/*.c; do
  obj="$work/$(basename "${src%.c}").o"
  "$CC" "${flags[@]}" -c "$src" -o "$obj" || { echo "test-arm: $CC failed on $src" >&2; exit 1; }
  objs+=("$obj")
done
ar rcs "$work/libkernels.a" "${objs[@]}"
tests=()
for src in Tests/KernelTests/*_test.c; do
  exe="$work/$(basename "${src%.c}")"
  "$CC" "${flags[@]}" "$src" "$work/libkernels.a" -o "$exe" -lm -lpthread || { echo "test-arm: $CC failed on $src" >&2; exit 1; }
  tests+=("$exe")
done
echo "test-arm: built ${#tests[@]} kernel tests with $("$CC" --version | head -n 1)"

# What each CPU model must exercise: the int8 GEMM chosen ("best:" of qgemm_test) and the fp16 window attention.
expect_best() { case $1 in cortex-a53|cortex-a72|cortex-a57) echo neon ;; cortex-a76|neoverse-n1|cortex-a55) echo neondot ;; max) echo i8mm ;; *) echo "" ;; esac; }
expect_fp16() { case $1 in cortex-a53|cortex-a72|cortex-a57) echo no ;; *) echo yes ;; esac; }

run_cpu() {
  local cpu=$1 status=0
  for exe in "${tests[@]}"; do
    local name out
    name=$(basename "$exe")
    out=$("$QEMU" -L "$SYSROOT" -cpu "$cpu" "$exe" 2>&1)
    local rc=$?
    printf '== %s %s (exit %d)\n' "$cpu" "$name" "$rc"
    # The programs print a few lines each (variants exercised, largest differences, failures, the summary).
    printf '%s\n' "$out" | head -n 40
    [ $rc -eq 0 ] && printf '%s\n' "$out" | tail -n 1 | grep -qE '^[0-9]+ passed, 0 failed$' || status=1
    if [ "$name" = qgemm_test ]; then
      local want best
      want=$(expect_best "$cpu")
      best=$(printf '%s\n' "$out" | sed -n 's/^best: //p' | head -n 1)
      if [ -n "$want" ] && [ "$best" != "$want" ]; then echo "test-arm: $cpu chose the int8 GEMM '$best', expected '$want'"; status=1; fi
    fi
    if [ "$name" = rowops_test ]; then
      local ran=no
      printf '%s\n' "$out" | grep -q '^fp16 window attention (neonfp16)' && ran=yes
      if [ "$ran" != "$(expect_fp16 "$cpu")" ]; then echo "test-arm: $cpu ran the NEON fp16 attention: $ran, expected $(expect_fp16 "$cpu")"; status=1; fi
    fi
  done
  echo "== $cpu: $([ $status -eq 0 ] && echo ok || echo FAILED)"
  return $status
}

pids=()
for cpu in "${cpus[@]}"; do
  run_cpu "$cpu" > "$work/$cpu.log" 2>&1 &
  pids+=($!)
done
failed=0
for i in "${!cpus[@]}"; do
  wait "${pids[$i]}" || failed=$((failed + 1))
  cat "$work/${cpus[$i]}.log"
done
echo "test-arm: $(( ${#cpus[@]} - failed )) passed, $failed failed"
[ $failed -eq 0 ]

#!/usr/bin/env bash
# Static speed estimate of the aarch64 int8 GEMM micro-kernels (no ARM hardware here): each kernel file is compiled
# with Debian's aarch64-linux-gnu-gcc -O2, the steady-state inner loop of its full tile is cut out of the assembly (the
# innermost loop holding the most multiply instructions), and llvm-mca runs it on several cores' scheduling models.
# The fp32 reference rate of each core is llvm-mca's throughput for 16 independent 4-lane fmla (the fp32 GEMM's
# instruction). Prints one row per kernel and core: multiply-accumulates per cycle, the core's fp32 FMA MACs per cycle,
# their ratio, and the busiest pipeline (what limits the loop).
# Usage: scripts/mca-estimate.sh [llvm-mca] (default: llvm-mca-19, else llvm-mca; Debian's llvm-19 has a Neoverse N1
# model; cortex-a72 and cortex-a76 use LLVM's Cortex-A57 model, the A72's own ancestor). By hand, not in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
MCA=${1:-$(command -v llvm-mca-19 || command -v llvm-mca)}
CC=${ARM_CC:-aarch64-linux-gnu-gcc}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
S=Sources/PocketSAMKernels

# kernel : source : cores
kernels=(
  "neon:qgemm_neon.c:cortex-a53 cortex-a72 cortex-a76 neoverse-n1"
  "neondot:qgemm_neondot.c:cortex-a76 neoverse-n1 neoverse-n2"
  "i8mm:qgemm_i8mm.c:neoverse-n2 neoverse-v1"
)

extract() { # asm file -> the innermost loop body with the most multiplies, and its MACs per iteration
  python3 - "$1" <<'PY'
import re, sys
lines = [l.rstrip('\n') for l in open(sys.argv[1])]
macs_of = [(re.compile(r'^\s+(smull2?|smlal2?)\s+v\d+\.8h'), 8), (re.compile(r'^\s+sdot\s+v\d+\.4s'), 16),
           (re.compile(r'^\s+usmmla\s'), 32)]
best = None
for i, l in enumerate(lines):
    m = re.match(r'^(\.L\w+):', l)
    if not m:
        continue
    for j in range(i + 1, len(lines)):
        if re.match(r'^\.L\w+:', lines[j]):
            break  # another label inside: not an innermost straight-line loop
        if re.match(r'^\s+b(\.?[a-z]+)?\s+%s$' % re.escape(m.group(1)), lines[j]) or \
           re.match(r'^\s+(cbn?z|tbn?z)\s.*,\s*%s$' % re.escape(m.group(1)), lines[j]):
            body = [x for x in lines[i + 1:j + 1] if x.startswith('\t') and not x.lstrip().startswith('.')]
            macs = sum(w for x in body for r, w in macs_of if r.match(x))
            if macs and (best is None or macs > best[0]):
                best = (macs, body)
            break
if best is None:
    sys.exit('no multiply loop found')
print('# MACS %d' % best[0])
print('\n'.join(best[1]))
PY
}

printf 'fp32 reference: 16 independent fmla v.4s\n' > /dev/null
for i in $(seq 0 15); do printf '\tfmla v%d.4s, v30.4s, v31.4s\n' "$i"; done > "$work/fmla.s"
fma_rate() { # cpu -> fp32 MACs per cycle
  local c
  c=$("$MCA" -mtriple=aarch64 -mcpu="$1" -iterations=400 "$work/fmla.s" 2>/dev/null | awk '/^Total Cycles:/ {print $3}')
  awk -v c="$c" 'BEGIN { printf "%.2f", 16 * 4 * 400 / c }'
}

echo "llvm-mca: $("$MCA" --version | grep -m1 -i 'llvm version' | sed 's/^ *//'); compiler: $("$CC" --version | head -n 1)"
printf '%-8s %-12s %6s %8s %9s %9s %7s  %s\n' kernel core MACs cycles MAC/cyc fp32/cyc ratio "busiest pipeline"
for entry in "${kernels[@]}"; do
  IFS=: read -r name src cores <<<"$entry"
  "$CC" -O2 -std=c11 -I "$S/include" -S "$S/$src" -o "$work/$name.s"
  extract "$work/$name.s" > "$work/$name.loop.s"
  macs=$(sed -n 's/^# MACS //p' "$work/$name.loop.s")
  for core in $cores; do
    out=$("$MCA" -mtriple=aarch64 -mcpu="$core" -mattr=+dotprod,+i8mm,+fullfp16 -iterations=400 "$work/$name.loop.s" 2>/dev/null)
    total=$(awk '/^Total Cycles:/ {print $3}' <<<"$out")
    # The resource with the highest pressure per iteration (resource names from the "Resources:" table).
    busiest=$(awk '
      /^Resources:/ { r = 1; next }
      r && /^\[/ { id = $1; sub(/^\[/, "", id); sub(/\]$/, "", id); name[n++] = $3; next }
      r && /^$/ { r = 0 }
      /^Resource pressure per iteration:/ { p = 1; next }
      p == 1 { p = 2; next }
      p == 2 { for (i = 1; i <= NF; i++) if ($i != "-" && $i + 0 > best) { best = $i + 0; who = name[i - 1] } p = 0 }
      END { printf "%s %.1f cycles", who, best }' <<<"$out")
    fma=$(fma_rate "$core")
    awk -v n="$name" -v c="$core" -v m="$macs" -v t="$total" -v f="$fma" -v b="$busiest" 'BEGIN {
      cyc = t / 400; rate = m / cyc
      printf "%-8s %-12s %6d %8.1f %9.2f %9.2f %6.2fx  %s\n", n, c, m, cyc, rate, f, rate / f, b }'
  done
done

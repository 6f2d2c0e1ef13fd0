#!/usr/bin/env bash
# dsv3-cast throughput on a 671B-width slice: GB/s of FP8 input and of BF16 output, against
# the floor (the same bytes read by cat and written by dd with fsync on the same disk), peak
# RSS, and the in-memory dequantisation rate per core.
. "$(dirname "$0")/lib.sh"
IN=$(slice); inb=$(dir_bytes "$IN")
rm -rf "$OUTD/cast-out"
cat "$IN"/*.safetensors > /dev/null   # same cache state for tool and floor
t0=$(now); "$BUILD/dsv3-cast/dsv3-cast" -q --json "$IN" "$OUTD/cast-out" > "$OUTD/cast.json"; t1=$(now)
outb=$(dir_bytes "$OUTD/cast-out"); rm -rf "$OUTD/cast-out"
t=$(secs "$t0" "$t1"); read -r fr fw < <(io_floor "$IN" "$outb"); floor=$(calc "$fr + $fw")
rss=$(grep -o '"peak_rss_bytes":[^,}]*' "$OUTD/cast.json" | grep -o '[0-9.e+]*$')
printf 'dsv3-cast  %s\n' "$(machine)"
printf '  input  %.2f GB FP8, output %.2f GB BF16, %.2f s\n' "$(gb "$inb")" "$(gb "$outb")" "$t"
printf '  input  %.2f GB/s   output %.2f GB/s\n' "$(calc "$inb / $t / 1e9")" "$(calc "$outb / $t / 1e9")"
printf '  floor  cat read %.2f s + dd write %.2f s = %.2f s   ratio floor/ours = %.2f\n' "$fr" "$fw" "$floor" "$(calc "$floor / $t")"
printf '  peak RSS %.0f MiB (budget --memory 256M)\n' "$(calc "$rss / 1048576")"
"$BUILD/bench/bench_fp8" 2>/dev/null || true

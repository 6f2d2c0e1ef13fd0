#!/usr/bin/env bash
# dsv3-convert throughput resharding a 671B-width slice to MP 8 and 16, against the I/O floor,
# and peak RSS.
. "$(dirname "$0")/lib.sh"
IN=$(slice); inb=$(dir_bytes "$IN")
printf 'dsv3-convert  %s\n' "$(machine)"
for mp in 8 16; do
  rm -rf "$OUTD/conv-out"
  cat "$IN"/*.safetensors > /dev/null
  t0=$(now); "$BUILD/dsv3-convert/dsv3-convert" -q --json "$IN" "$OUTD/conv-out" --mp $mp > "$OUTD/conv.json"; t1=$(now)
  outb=$(dir_bytes "$OUTD/conv-out"); rm -rf "$OUTD/conv-out"
  t=$(secs "$t0" "$t1"); read -r fr fw < <(io_floor "$IN" "$outb"); floor=$(calc "$fr + $fw")
  rss=$(grep -o '"peak_rss_bytes":[^,}]*' "$OUTD/conv.json" | grep -o '[0-9.e+]*$')
  printf '  mp%-2d  %.2f GB in, %.2f GB out, %.2f s = %.2f GB/s in; floor %.2f s; ratio %.2f; peak RSS %.0f MiB\n' \
    $mp "$(gb "$inb")" "$(gb "$outb")" "$t" "$(calc "$inb / $t / 1e9")" "$floor" "$(calc "$floor / $t")" \
    "$(calc "$rss / 1048576")"
done

#!/usr/bin/env bash
# Integrity benchmarks (issue 5): `dsv3-inspect verify` (SHA-256 per file + XXH3 on a bad file,
# files in parallel) against `sha256sum` over the same files and the read floor (cat); `--pack`
# (zstd, all cores) and reading the archive back against `tar | zstd -T0` and `zstd -dc | tar`.
# Uses the generator's slice (LAYERS, default 1) and its BF16 cast when present.
. "$(dirname "$0")/lib.sh"
IN=$(slice); inb=$(dir_bytes "$IN")
printf 'integrity  %s\n' "$(machine)"
rm -rf "$OUTD/cvt"; "$BUILD/dsv3-convert/dsv3-convert" -q "$IN" "$OUTD/cvt" --mp 8   # a checkpoint with a manifest
b=$(dir_bytes "$OUTD/cvt")
cat "$OUTD"/cvt/*.safetensors > /dev/null
t0=$(now); cat "$OUTD"/cvt/*.safetensors > /dev/null; t1=$(now)
"$BUILD/dsv3-inspect/dsv3-inspect" verify -q "$OUTD/cvt" > /dev/null; t2=$(now)
(cd "$OUTD/cvt" && sha256sum model*.safetensors > /dev/null); t3=$(now)
(cd "$OUTD/cvt" && ls model*.safetensors | xargs -P "$(nproc)" -n 1 sha256sum > /dev/null); t4=$(now)
printf '  verify %.2f GB: %.2f GB/s; sha256sum %.2f GB/s (1 process), %.2f GB/s (one per core); cat %.2f GB/s; verify/cat %.2f\n' \
  "$(gb "$b")" "$(calc "$b / $(secs "$t1" "$t2") / 1e9")" "$(calc "$b / $(secs "$t2" "$t3") / 1e9")" \
  "$(calc "$b / $(secs "$t3" "$t4") / 1e9")" "$(calc "$b / $(secs "$t0" "$t1") / 1e9")" "$(calc "$(secs "$t0" "$t1") / $(secs "$t1" "$t2")")"
rm -f "$OUTD/p.tar.zst" "$OUTD/q.tar.zst"
t0=$(now); "$BUILD/dsv3-convert/dsv3-convert" -q "$OUTD/cvt" --mp 8 --no-manifest --pack "$OUTD/p.tar.zst"; t1=$(now)
(cd "$OUTD/cvt" && tar -cf - model*.safetensors config.json | zstd -q -T0 -3 -o "$OUTD/q.tar.zst"); t2=$(now)
"$BUILD/dsv3-inspect/dsv3-inspect" -q "$OUTD/p.tar.zst" > /dev/null; t3=$(now)
zstd -q -dc "$OUTD/q.tar.zst" | tar -t > /dev/null; t4=$(now)
pb=$(stat -c %s "$OUTD/p.tar.zst")
printf '  pack (convert --pack, zstd -3, all cores) %.2f GB/s vs tar|zstd -T0 %.2f GB/s; ratio %.2f of the input (FP8)\n' \
  "$(calc "$b / $(secs "$t0" "$t1") / 1e9")" "$(calc "$b / $(secs "$t1" "$t2") / 1e9")" "$(calc "$pb / $b")"
printf '  read the archive (dsv3-inspect, in memory) %.2f GB/s vs zstd -dc|tar -t %.2f GB/s\n' \
  "$(calc "$b / $(secs "$t2" "$t3") / 1e9")" "$(calc "$b / $(secs "$t3" "$t4") / 1e9")"
rm -rf "$OUTD/cvt" "$OUTD/p.tar.zst" "$OUTD/q.tar.zst" "$OUTD/p.tar.zst.d"

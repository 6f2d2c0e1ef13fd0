#!/usr/bin/env bash
# dsv3-cast against an independent numpy re-implementation (tests/cast/verify_numpy.py) on
# models/dsv3-tiny: weight_dequant into bf16 (RNE by integer ops), f16 and f32; the block
# quantisation back to FP8 (plain and ue8m0); and the exact account of a plain round trip:
# FP8 bytes come back, each scale comes back as max(round_wide(v * s0), 1e-4) / 448.
. "$SRC/tests/lib.sh"
have_python || { echo "python3 needed"; exit 77; }
"$PYTHON" -c 'import numpy' 2>/dev/null || { echo "numpy needed"; exit 77; }
V="$PYTHON $SRC/tests/cast/verify_numpy.py"
check() { local d=$1; shift; if $V "$@" >"$T/v" 2>&1; then ok; else fail "$d: $(head -c 800 "$T/v")"; fi; }
for to in bf16 f16 f32; do
  expect "cast to $to" "$CAST" -q --no-manifest --memory 1M --to $to "$DSV3_TINY" "$T/$to"
  check "numpy dequant $to" dequant "$DSV3_TINY" "$T/$to" $to
done
expect "bf16 -> fp8" "$CAST" -q --no-manifest --to fp8 "$T/bf16" "$T/fp8"
check "numpy quant" quant "$T/bf16" "$T/fp8"
check "round trip via bf16 explained" roundtrip "$DSV3_TINY" "$T/fp8" bf16
grep -q "136 of 136 FP8 weights byte-identical" "$T/v" && ok || fail "round trip via bf16 changed FP8 bytes: $(cat "$T/v")"
expect "f32 -> fp8" "$CAST" -q --no-manifest --to fp8 "$T/f32" "$T/fp8f"
check "numpy quant from f32" quant "$T/f32" "$T/fp8f"
check "round trip via f32 explained" roundtrip "$DSV3_TINY" "$T/fp8f" f32
expect "bf16 -> fp8 ue8m0" "$CAST" -q --no-manifest --to fp8 --scale-fmt ue8m0 "$T/bf16" "$T/ue"
check "numpy quant ue8m0" quant "$T/bf16" "$T/ue" ue8m0
# a ue8m0 (DeepSeek-V3.1 style) checkpoint round-trips exactly except blocks whose largest
# code rounded down to 224 (then the scale halves): predicted exactly as well
expect "ue8m0 -> bf16" "$CAST" -q --no-manifest "$T/ue" "$T/ue-bf16"
expect "bf16 -> ue8m0 again" "$CAST" -q --no-manifest --to fp8 --scale-fmt ue8m0 "$T/ue-bf16" "$T/ue2"
check "ue8m0 round trip explained" roundtrip "$T/ue" "$T/ue2" bf16 ue8m0
finish

#!/usr/bin/env bash
# dsv3-convert on models/dsv3-tiny.
# tests/data/ref_convert_mp{1,2,4}.tsv hold per-tensor and per-file SHA-256 of the official
# convert.py's output (its hard-coded "model.layers.61" replaced by "model.layers.4", the MTP
# layer of this model), made on the GPU machine by scripts/ref/gpu-reference.sh:
#   python3 convert.py --hf-ckpt-path models/dsv3-tiny --save-path OUT --n-experts 8 --model-parallel MP
#   scripts/ref/hash_tensors.py OUT ref_convert_mpMP.tsv
. "$SRC/tests/lib.sh"
have_python || { echo "python3 needed to hash tensors"; exit 77; }
H="$PYTHON $SRC/scripts/ref/hash_tensors.py"
for mp in 1 2 4; do
  expect "convert mp$mp" "$CONVERT" -q "$DSV3_TINY" "$T/mp$mp" --mp $mp
  $H "$T/mp$mp" "$T/mp$mp.tsv"
  diff "$DSV3_TESTDATA/ref_convert_mp$mp.tsv" "$T/mp$mp.tsv" > "$T/d" && ok || fail "mp$mp differs from convert.py: $(head -4 "$T/d")"
  [ -f "$T/mp$mp/tokenizer.json" ] && [ -f "$T/mp$mp/tokenizer_config.json" ] && [ -f "$T/mp$mp/config.json" ] && ok || fail "mp$mp: *token* files or config.json not copied"
done
# the official flags
expect "official flags" "$CONVERT" -q --hf-ckpt-path "$DSV3_TINY" --save-path "$T/off2" --n-experts 8 --model-parallel 2
$H "$T/off2" "$T/off2.tsv"; diff "$DSV3_TESTDATA/ref_convert_mp2.tsv" "$T/off2.tsv" >/dev/null && ok || fail "official flags output"
# reshard a runtime checkpoint: mp4 -> mp2 equals direct mp2; mp4 -> mp1 equals direct mp1
expect "reshard 4->2" "$CONVERT" -q "$T/mp4" "$T/r42" --mp 2
$H "$T/r42" "$T/r42.tsv"; diff "$DSV3_TESTDATA/ref_convert_mp2.tsv" "$T/r42.tsv" >/dev/null && ok || fail "mp4->mp2 differs from direct mp2"
expect "reshard 4->1" "$CONVERT" -q "$T/mp4" "$T/r41" --mp 1
$H "$T/r41" "$T/r41.tsv"; diff "$DSV3_TESTDATA/ref_convert_mp1.tsv" "$T/r41.tsv" >/dev/null && ok || fail "mp4->mp1 differs from direct mp1"
expect "reshard 1->4" "$CONVERT" -q "$T/mp1" "$T/r14" --mp 4
$H "$T/r14" "$T/r14.tsv"; diff "$DSV3_TESTDATA/ref_convert_mp4.tsv" "$T/r14.tsv" >/dev/null && ok || fail "mp1->mp4 differs from direct mp4"
# --dtype bf16 equals dsv3-cast then dsv3-convert
expect "bf16 in one pass" "$CONVERT" -q "$DSV3_TINY" "$T/b2" --mp 2 --dtype bf16
expect "cast" "$CAST" -q "$DSV3_TINY" "$T/bf16"
expect "then convert" "$CONVERT" -q "$T/bf16" "$T/cb2" --mp 2
$H "$T/b2" "$T/b2.tsv"; $H "$T/cb2" "$T/cb2.tsv"
diff "$T/b2.tsv" "$T/cb2.tsv" >/dev/null && ok || fail "--dtype bf16 differs from cast+convert"
cmp -s "$DSV3_TINY/config.json" "$T/mp2/config.json" && ok || fail "config.json not copied as it is"
expect "bf16 check" "$INSPECT" --check "$T/b2"
grep -q quantization_config "$T/b2/config.json" && fail "bf16: config.json keeps quantization_config" || ok
contains "bf16 torch_dtype" "$T/b2/config.json" '"torch_dtype":.*"bfloat16"'
cmp -s "$T/bf16/config.json" "$T/cb2/config.json" && ok || fail "config.json of cast+convert changed by convert"
expect "bf16 from runtime mp4" "$CONVERT" -q "$T/mp4" "$T/b4to2" --mp 2 --dtype bf16
$H "$T/b4to2" "$T/b4to2.tsv"; diff "$T/b2.tsv" "$T/b4to2.tsv" >/dev/null && ok || fail "bf16 from mp4 differs"
# --keep-mtp keeps layer 4 under runtime names and passes --check
expect "keep mtp" "$CONVERT" -q "$DSV3_TINY" "$T/mtp" --mp 2 --keep-mtp
contains "mtp names" <("$INSPECT" --tensors "$T/mtp") "layers.4.eh_proj.weight"
expect "mtp check" "$INSPECT" --check "$T/mtp"
# invalid degrees, each with its reason, nothing written
expect_error "mp 3" "8 experts are not divisible by 3 ranks" "$CONVERT" -q "$DSV3_TINY" "$T/x3" --mp 3
expect_error "mp 8" "cannot split for --mp 8: tensor .* (largest valid degree below it: 4)" "$CONVERT" -q "$DSV3_TINY" "$T/x8" --mp 8
expect_error "mp 16" "largest valid degree below it: 4" "$CONVERT" -q "$DSV3_TINY" "$T/x16" --mp 16
[ ! -e "$T/x8" ] && ok || fail "output written for an invalid degree"
expect_error "n-experts mismatch" "n-experts 16 but .*n_routed_experts 8" "$CONVERT" -q "$DSV3_TINY" "$T/xe" --mp 2 --n-experts 16
expect_error "out inside in" "must not be the input directory" "$CONVERT" -q "$DSV3_TINY" "$DSV3_TINY/out" --mp 2
cp -r "$DSV3_TINY" "$T/trunc"; truncate -s 4000000 "$T/trunc/model-00001-of-00003.safetensors"
expect_error "truncated input" "model-00001-of-00003.safetensors: .*" "$CONVERT" -q "$T/trunc" "$T/xt" --mp 2
# resume after an interruption
DSV3_TEST_STOP_AFTER_FILES=1 "$CONVERT" -q "$DSV3_TINY" "$T/res" --mp 4 2>/dev/null; [ $? -eq 3 ] && ok || fail "stop hook"
expect "resume" "$CONVERT" --json --resume "$DSV3_TINY" "$T/res" --mp 4
contains "resumed" "$T/out" '"files_skipped":.*1'
$H "$T/res" "$T/res.tsv"; diff "$DSV3_TESTDATA/ref_convert_mp4.tsv" "$T/res.tsv" >/dev/null && ok || fail "resumed output differs"
[ -z "$(find "$T" -name '.*.tmp.*')" ] && ok || fail "temp files left behind"
finish

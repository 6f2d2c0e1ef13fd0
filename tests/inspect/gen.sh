#!/usr/bin/env bash
# dsv3-gen: a random checkpoint in the official HF FP8 layout that dsv3-inspect --check accepts,
# the same tensors and bytes as models/dsv3-tiny for its config, deterministic for a seed
# whatever the thread count or sharding, realistic values (no NaN, scales in [1e-3, 1e-2]).
. "$SRC/tests/lib.sh"
GEN=$BUILD/bench/dsv3-gen
PY=${PYTHON:-}
[ -x "$GEN" ] || { echo "dsv3-gen not built"; exit 77; }
C=$SRC/bench/configs/dsv3-tiny.json
expect "gen" "$GEN" -q --config "$C" --out "$T/g" --seed 7 --shard-size 10M
expect "gen check" "$INSPECT" --check "$T/g"
contains "gen check ok" "$T/out" "^ok: 309 tensors match"
expect "gen summary" "$INSPECT" "$T/g"
contains "same bytes as the tiny model" "$T/out" "^bytes        31431328 (29.98 MiB), index total_size 31431328: matches$"
contains "shards" "$T/out" "^layout       hf, 4 files$"
[ -f "$T/g/model-00004-of-00004.safetensors" ] && ok || fail "shard names: $(ls "$T/g")"
grep -q "^warning" "$T/out" && fail "warnings: $(grep ^warning "$T/out")" || ok
# same seed: identical files, whatever the threads; other seed: different values
expect "gen again" "$GEN" -q --config "$C" --out "$T/g2" --seed 7 --shard-size 10M --threads 1
for f in "$T"/g/*; do cmp -s "$f" "$T/g2/$(basename "$f")" || fail "not deterministic: $(basename "$f")"; done; ok
expect "gen one shard" "$GEN" -q --config "$C" --out "$T/g1" --seed 7
expect "diff across shardings" "$INSPECT" diff -q "$T/g" "$T/g1"
expect "gen seed 8" "$GEN" -q --config "$C" --out "$T/g8" --seed 8
"$INSPECT" diff -q "$T/g" "$T/g8" > "$T/out" 2>&1; [ $? = 1 ] && ok || fail "seeds 7 and 8 give the same model"
contains "all tensors differ" "$T/out" "^different: 173 tensors compared, 173 differ"
# values: no NaN/Inf, scales within [1e-3, 1e-2], norms near 1
expect "gen stats" "$INSPECT" stats --json -q "$T/g"
if [ -n "$PY" ]; then
  "$PY" - "$T/out" <<'PY' && ok || fail "generated values not realistic"
import json, sys
for e in json.load(open(sys.argv[1])):
    n = e["name"]
    assert e["nan"] == 0 and e["inf"] == 0 and e["count"] > 0, e
    assert e["std"] > 0, e
    if n.endswith("_scale_inv"):
        assert 1e-3 <= e["min"] and e["max"] <= 1e-2, e
    elif n.endswith("norm.weight"):
        assert 0.3 < e["mean"] < 1.7, e
    elif e["dtype"] == "F8_E4M3":
        assert e["dequantized"] and 0 < e["absmax"] <= 448 * 1e-2, e
PY
fi
# options: --no-mtp, --layers, --shards, --dtype bf16; refusing to overwrite
expect "gen no-mtp" "$GEN" -q --config "$C" --out "$T/nomtp" --no-mtp --layers 2
expect "no-mtp check" "$INSPECT" --check "$T/nomtp"
expect "no-mtp summary" "$INSPECT" "$T/nomtp"
contains "no-mtp layers" "$T/out" "^layers       2 main (1 dense, 1 MoE) + 0 MTP$"
expect "gen shards" "$GEN" -q --config "$C" --out "$T/sh" --shards 7
[ "$(ls "$T/sh" | grep -c 'of-00007.safetensors$')" = 7 ] && ok || fail "--shards 7: $(ls "$T/sh")"
expect "shards check" "$INSPECT" --check "$T/sh"
expect "gen bf16" "$GEN" -q --config "$C" --out "$T/bf" --dtype bf16
expect "bf16 check" "$INSPECT" --check "$T/bf"
expect "bf16 summary" "$INSPECT" "$T/bf"
contains "bf16: no quantization" "$T/out" "^quantization none$"
# the official demo's config format (ModelArgs names) is accepted and written out as an HF config
cat > "$T/demo.json" <<'JSON'
{"vocab_size": 1024, "dim": 256, "inter_dim": 512, "moe_inter_dim": 64, "n_layers": 3, "n_dense_layers": 1,
 "n_heads": 4, "n_routed_experts": 8, "n_shared_experts": 1, "n_activated_experts": 2, "n_expert_groups": 2,
 "n_limited_groups": 1, "route_scale": 2.5, "score_func": "sigmoid", "q_lora_rank": 64, "kv_lora_rank": 64,
 "qk_nope_head_dim": 32, "qk_rope_head_dim": 16, "v_head_dim": 32, "dtype": "fp8"}
JSON
expect "gen demo format" "$GEN" -q --config "$T/demo.json" --out "$T/demo" --layers 2
expect "demo check" "$INSPECT" --check "$T/demo"
contains "demo hf config" "$T/demo/config.json" '"num_hidden_layers":[[:space:]]*2'
# the real 671B config, planned only: the official release's tensor count and bytes
expect "671b plan" "$GEN" --config "$SRC/bench/configs/deepseek-v3-671b.json" --out "$T/full" --dry-run
contains "671b: 91991 tensors" "$T/out" ": 91991 tensors (45808 FP8 weights, 633.83 GiB), 688574839360 bytes (641.29 GiB), 61 layers + 1 MTP$"
[ ! -e "$T/full" ] && ok || fail "--dry-run wrote something"
expect "671b 4-layer plan" "$GEN" --config "$SRC/bench/configs/deepseek-v3-671b.json" --out "$T/full" --layers 4 --dry-run
contains "671b 4 layers" "$T/out" ": 3185 tensors .* 32393832544 bytes (30.17 GiB), 4 layers + 1 MTP$"
expect_error "refuses to overwrite" "already holds a checkpoint" "$GEN" -q --config "$C" --out "$T/g"
expect_error "bad config" "nope.json" "$GEN" -q --config "$T/nope.json" --out "$T/x"
"$GEN" --config "$C" > /dev/null 2>&1; [ $? = 2 ] && ok || fail "no --out: not a usage error"
finish

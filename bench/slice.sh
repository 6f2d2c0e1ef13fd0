# Shared by bench/cast_bench.sh and bench/convert_bench.sh (sourced): the 671B-width slice
# they measure and the page-cache eviction of their cold runs.  Needs ROOT, GEN, LAYERS,
# EXPERTS, VOCAB, SHARD from the caller.

# evict DIR...: drop the files' pages from the page cache (clean pages: sync first)
evict() {
  sync
  python3 - "$@" <<'PY'
import os, sys
for d in sys.argv[1:]:
    for f in os.listdir(d):
        p = os.path.join(d, f)
        if os.path.isfile(p):
            fd = os.open(p, os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)
PY
}

# make_slice IN WORKDIR: dsv3-gen writes LAYERS MoE layers of the 671B config at real widths
# (first_k_dense_replace 0, no MTP) with EXPERTS routed experts and the vocabulary cut to
# VOCAB into IN, unless IN already holds a checkpoint
make_slice() {
  [ -f "$1/model.safetensors.index.json" ] && return 0
  python3 - "$ROOT/bench/configs/deepseek-v3-671b.json" "$2/cfg.json" "$EXPERTS" "$VOCAB" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["first_k_dense_replace"] = 0
c["n_routed_experts"] = int(sys.argv[3])
c["vocab_size"] = int(sys.argv[4])
if c["n_routed_experts"] < 64:  # routing groups must still cover num_experts_per_tok
    c["n_group"], c["topk_group"] = 1, 1
    c["num_experts_per_tok"] = min(c["num_experts_per_tok"], c["n_routed_experts"])
json.dump(c, open(sys.argv[2], "w"), indent=2)
PY
  echo "generating the slice in $1 ..." >&2
  "$GEN" --config "$2/cfg.json" --layers "$LAYERS" --no-mtp --shard-size "$SHARD" --out "$1" -q
}

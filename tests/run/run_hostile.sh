#!/usr/bin/env bash
# dsv3-run on hostile checkpoints (copies of models/dsv3-tiny with one thing broken): each run
# ends with one line on stderr naming the file (and the tensor or field), a non-zero exit, no
# crash, no output on stdout, and the input untouched.
. "$SRC/tests/lib.sh"
M=$DSV3_TINY
# mk NAME: a copy of the tiny model made of links, where the test then replaces one file
mk() {
  local d="$T/$1"
  mkdir -p "$d"
  for f in "$M"/*; do ln -s "$(cd "$(dirname "$f")" && pwd)/$(basename "$f")" "$d/$(basename "$f")"; done
  echo "$d"
}
# swap DIR FILE: replace the link by a private copy the test may edit
swap() { rm "$1/$2" && cp "$M/$2" "$1/$2"; }
# bad NAME PATTERN DIR [args...]: dsv3-run must fail with one line matching PATTERN, print nothing
bad() {
  local name=$1 pat=$2 d=$3; shift 3
  expect_error "$name" "$pat" "$RUN" --ckpt "$d" --raw --prompt "def f():" --max-new-tokens 3 --temperature 0 -q "$@"
  [ -s "$T/out" ] && fail "$name: printed on stdout: $(head -c 200 "$T/out")" || ok
}
sum0=$(cat "$M"/* | cksum)

# bad_config NAME SED DESC PATTERN: the config edited by SED must be refused with PATTERN
bad_config() {
  local d
  d=$(mk "$1"); swap "$d" config.json; sed -i "$2" "$d/config.json"
  bad "$3" "$4" "$d"
}

# config.json
d=$(mk cfg_json); swap "$d" config.json; head -c 300 "$M/config.json" > "$d/config.json"
bad "truncated config" "cfg_json/config.json: not valid JSON" "$d"
bad_config cfg_topk 's/"num_experts_per_tok": 2/"num_experts_per_tok": 9/' \
  "top-k above the experts" 'config.json: field "num_experts_per_tok" 9 must be in'
bad_config cfg_group 's/"n_group": 4/"n_group": 3/' "groups not dividing the experts" 'not divisible by "n_group" 3'
bad_config cfg_huge 's/"kv_lora_rank": 128/"kv_lora_rank": 1099511627776/' \
  "huge dimension" 'field "kv_lora_rank" must be positive and below 2^40'
bad_config cfg_heads 's/"num_attention_heads": 16/"num_attention_heads": 0/' \
  "zero heads" 'field "num_attention_heads" must be positive'
bad_config cfg_hidden 's/"hidden_size": 512/"hidden_size": 1024/' \
  "config lies about the width" "tensor model.embed_tokens.weight: expected"
bad_config cfg_layers 's/"num_hidden_layers": 4/"num_hidden_layers": 40/' \
  "config asks for layers that are not there" "tensor model.layers.5.input_layernorm.weight: missing"
bad_config cfg_score 's/"scoring_func": "sigmoid"/"scoring_func": "relu"/' "unknown scoring" '"scoring_func" is "relu"'

# tokenizer.json
d=$(mk tok_trunc); swap "$d" tokenizer.json; head -c 5000 "$M/tokenizer.json" > "$d/tokenizer.json"
bad "truncated tokenizer" "tok_trunc/tokenizer.json: not a JSON object" "$d"
# a FIFO where a file belongs: refused at once (open() on a FIFO blocks until a writer comes;
# it hung dsv3-run before); `timeout` turns a hang into a failure
d=$(mk tok_fifo); rm "$d/tokenizer.json"; mkfifo "$d/tokenizer.json"
expect_error "tokenizer.json a FIFO" "tok_fifo/tokenizer.json: not a regular file" \
  timeout 20 "$RUN" --ckpt "$d" --raw --prompt "def f():" --max-new-tokens 3 -q
d=$(mk tok_merge); swap "$d" tokenizer.json; sed -i '0,/"merges": \[/s//"merges": ["zzzq yyyq", /' "$d/tokenizer.json"
bad "merge of unknown tokens" "tokenizer.json: model.merges\[0\]: zzzq yyyq is not in the vocabulary" "$d"
# a chain of Replace normalizers whose pattern matches the empty string grows a text 40-fold a
# step (found by fuzz_tokenizer: 2 GB from a line); refused past 16x + 4 KB, also by --tokenize
d=$(mk tok_norm); swap "$d" tokenizer.json
r='{"type":"Replace","pattern":{"Regex":""},"content":"0123456789012345678901234567890123456789"}'
sed -i "s/\"normalizer\": null/\"normalizer\": {\"type\":\"Sequence\",\"normalizers\":[$r,$r,$r,$r,$r,$r,$r,$r]}/" "$d/tokenizer.json"
bad "normalizer growing the text geometrically" "tok_norm/tokenizer.json: the normalizer makes a" "$d"
expect_error "normalizer growth, --tokenize" "tok_norm/tokenizer.json: the normalizer makes a" \
  sh -c 'echo "def f(): return 1" | "$0" --ckpt "$1" --tokenize' "$RUN" "$d"

# shards and index
d=$(mk shard_trunc); swap "$d" model-00002-of-00003.safetensors
truncate -s 5000000 "$d/model-00002-of-00003.safetensors"
bad "truncated shard" "model-00002-of-00003.safetensors" "$d"
d=$(mk shard_gone); rm "$d/model-00003-of-00003.safetensors"
bad "missing shard" "model-00003-of-00003.safetensors" "$d"
d=$(mk idx_scale); swap "$d" model.safetensors.index.json
sed -i '/"model.layers.0.mlp.down_proj.weight_scale_inv"/d' "$d/model.safetensors.index.json"
bad "index without a scale" "model.layers.0.mlp.down_proj.weight_scale_inv" "$d"
d=$(mk idx_wrong); swap "$d" model.safetensors.index.json
sed -i 's/"model.layers.0.mlp.down_proj.weight": "model-00001-of-00003.safetensors"/"model.layers.0.mlp.down_proj.weight": "model-00003-of-00003.safetensors"/' \
  "$d/model.safetensors.index.json"
grep -q '"model.layers.0.mlp.down_proj.weight": "model-00003' "$d/model.safetensors.index.json" || fail "index edit did not apply"
bad "index names the wrong shard" "model.layers.0.mlp.down_proj.weight" "$d"
if have_python; then # a shard whose header lacks a scale its weight needs (data left in place)
  d=$(mk st_scale); swap "$d" model-00001-of-00003.safetensors
  "$PYTHON" - "$d/model-00001-of-00003.safetensors" <<'EOF'
import json, struct, sys
p = sys.argv[1]
b = open(p, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
# renamed, so the data section stays exactly covered and only the scale's name is gone
h["model.layers.0.mlp.down_proj.weight_scale_gone"] = h.pop("model.layers.0.mlp.down_proj.weight_scale_inv")
t = json.dumps(h).encode()
t += b" " * ((8 - len(t) % 8) % 8)
open(p, "wb").write(struct.pack("<Q", len(t)) + t + b[8 + n:])
EOF
  bad "shard without a scale" "model.layers.0.mlp.down_proj.weight_scale_inv" "$d"
fi
[ "$(cat "$M"/* | cksum)" = "$sum0" ] && ok || fail "the model directory changed"
finish

#!/usr/bin/env python3
"""Expected HF -> runtime names for every tensor of a checkpoint, computed by re-running the
name loop of the official inference/convert.py (DeepSeek-V3, commit 9b4e978) on the names of
the index: strip "model.", str.replace self_attn->attn, mlp->ffn, weight_scale_inv->scale,
e_score_correction_bias->bias, key = second-to-last dotted component, name.replace(key,
mapping[key]); routed experts ("experts" in name, not "shared_experts") go whole to one rank,
otherwise the mapping's dim is the split dim.

MTP layers (>= num_hidden_layers) are skipped by convert.py (its hard-coded "model.layers.61");
for them the same loop runs with the MTP-only keys added (enorm, hnorm, eh_proj -> themselves,
head -> head split on dim 0 like lm_head), which is what dsv3-convert --keep-mtp writes.  Those
rows are marked "mtp"; the others "official".

usage: convert_names.py MODEL_DIR > tests/data/tiny_names_rt.tsv
Output (sorted by HF name): HF_NAME <TAB> RUNTIME_NAME <TAB> SPLIT <TAB> KIND
SPLIT is dim0, dim1, none or expert."""
import json
import os
import sys

# convert.py's mapping, verbatim.
mapping = {
    "embed_tokens": ("embed", 0),
    "input_layernorm": ("attn_norm", None),
    "post_attention_layernorm": ("ffn_norm", None),
    "q_proj": ("wq", 0),
    "q_a_proj": ("wq_a", None),
    "q_a_layernorm": ("q_norm", None),
    "q_b_proj": ("wq_b", 0),
    "kv_a_proj_with_mqa": ("wkv_a", None),
    "kv_a_layernorm": ("kv_norm", None),
    "kv_b_proj": ("wkv_b", 0),
    "o_proj": ("wo", 1),
    "gate": ("gate", None),
    "gate_proj": ("w1", 0),
    "down_proj": ("w2", 1),
    "up_proj": ("w3", 0),
    "norm": ("norm", None),
    "lm_head": ("head", 0),
    "scale": ("scale", None),
}
mtp_extra = {"enorm": ("enorm", None), "hnorm": ("hnorm", None), "eh_proj": ("eh_proj", None),
             "head": ("head", 0)}


def convert(name, table):
    # the body of convert.py's loop, minus the tensor
    if name.startswith("model."):
        name = name[len("model."):]
    name = name.replace("self_attn", "attn")
    name = name.replace("mlp", "ffn")
    name = name.replace("weight_scale_inv", "scale")
    name = name.replace("e_score_correction_bias", "bias")
    key = name.split(".")[-2]
    assert key in table, f"Key {key} not found in mapping"
    new_key, dim = table[key]
    name = name.replace(key, new_key)
    if "experts" in name and "shared_experts" not in name:
        split = "expert"
    elif dim is not None:
        split = f"dim{dim}"
    else:
        split = "none"
    return name, split


def main():
    d = sys.argv[1]
    cfg = json.load(open(os.path.join(d, "config.json")))
    n_main = cfg["num_hidden_layers"]
    names = sorted(json.load(open(os.path.join(d, "model.safetensors.index.json")))["weight_map"])
    for n in names:
        if f"model.layers.{n_main}." in n or any(f"model.layers.{n_main + k}." in n
                                                 for k in range(cfg.get("num_nextn_predict_layers", 0))):
            rt, split = convert(n, {**mapping, **mtp_extra})
            kind = "mtp"
        else:
            rt, split = convert(n, mapping)
            kind = "official"
        print(f"{n}\t{rt}\t{split}\t{kind}")


if __name__ == "__main__":
    main()

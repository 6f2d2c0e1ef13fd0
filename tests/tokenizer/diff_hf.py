#!/usr/bin/env python3
"""Differential test: dsv3-run's C tokenizer (through tok_cli) against Hugging Face `tokenizers`
on random texts, for the real tokenizer.json and for variants of it that switch on the features
DeepSeek-V3 does not use (Split behaviours and invert, String patterns, added-token flags,
normalizers, other pre-tokenizers, unk / byte_fallback / subword prefix and suffix, legacy merges).

Usage: diff_hf.py TOK_CLI TOKENIZER_JSON [--cases N] [--seed S] [--only NAME]
Exit 0 all equal, 1 a difference (printed), 77 when `tokenizers` is not installed."""
import argparse, base64, copy, json, os, random, subprocess, sys, tempfile

try:
    from tokenizers import Tokenizer
except ImportError:
    print("tokenizers not installed: skipped")
    sys.exit(77)

BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"
USER, ASSISTANT = "<｜User｜>", "<｜Assistant｜>"
WORDS = ["the", "The", " quick", "brown", "fox", "it's", "we're", "I'd", "they'll", "you've", "don't", "'s", "'t",
         "def", "return", "self", "__init__", "print(", "x=1", "a_b", "camelCase", "HTTP", "naïve", "café", "Ünïcödé",
         "straße", "ﬁ", "İstanbul", "中文", "日本語", "カタカナ", "ひらがな", "한국어", "Ελληνικά", "русский", "עברית", "عربي",
         "हिन्दी", "ไทย", "😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "❤️", "∑", "ᵢ", "²", "½", "Ⅻ", "٣", "१२३", "①", "e\u0301",
         "\u200d", "\ufeff", "\u00ad", "§", "©", "€", "$", "£", "...", "--", "==", "!=", "->", "=>", "**", "//", "<<", "::",
         "0", "7", "42", "123", "4567", "3.14", "1e-9", "0x1F", "1,000", "2024-01-01", "v1.2.3", "https://a.b/c?d=e",
         "user@example.com", "C:\\path", "\"q\"", "'q'", "`q`", "#", "@", "%", "&", "|", "~", "^"]
SPACES = [" ", "  ", "   ", "    ", "\t", "\n", "\n\n", "\r\n", "\r", " \n", "\n ", "\u00a0", "\u3000", "\u2028",
          "\u2009", "\x85", "\x0b", "\x0c", " \t ", "        "]
LETTERS = "abcdefghij"
SPECIAL = [BOS, EOS, PAD, USER, ASSISTANT, "<｜User", "｜>", "<｜", "<|User|>"]


def rand_cp(rng):
    while True:
        c = rng.choice([rng.randint(0x20, 0x7f), rng.randint(0xa0, 0x2fff), rng.randint(0x3000, 0xd7ff),
                        rng.randint(0xe000, 0xffff), rng.randint(0x10000, 0x10ffff), rng.randint(0, 0x1f)])
        if not 0xd800 <= c < 0xe000:
            return chr(c)


def rand_text(rng, extra):
    parts = []
    for _ in range(rng.randint(0, 14)):
        r = rng.random()
        if r < 0.35:
            parts.append(rng.choice(WORDS))
        elif r < 0.6:
            parts.append(rng.choice(SPACES))
        elif r < 0.7:
            parts.append(rng.choice(SPECIAL + extra))
        elif r < 0.8:
            parts.append("".join(rand_cp(rng) for _ in range(rng.randint(1, 4))))
        elif r < 0.9:
            parts.append(str(rng.randint(0, 10 ** rng.randint(1, 12))))
        else:
            parts.append("".join(rng.choice("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") for _ in range(rng.randint(1, 5))))
    return "".join(parts).encode("utf-8")


def rand_bytes(rng):
    b = bytearray(rand_text(rng, []))
    for _ in range(rng.randint(1, 4)):
        pos = rng.randint(0, len(b))
        b[pos:pos] = bytes(rng.choice([[0xff], [0x80], [0xc3], [0xe2, 0x82], [0xf0, 0x9f, 0x98], [0xed, 0xa0, 0x80],
                                       [0xc0, 0xaf], [0xf4, 0x90, 0x80, 0x80], [rng.randint(0x80, 0xff)]]))
    return bytes(b)


def variants(base):
    """(name, tokenizer dict, extra strings worth putting in texts)"""
    out = [("deepseek", base, [])]
    pre = base["pre_tokenizer"]["pretokenizers"]
    for beh in ["Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous"]:
        for inv in [False, True]:
            v = copy.deepcopy(base)
            for p in v["pre_tokenizer"]["pretokenizers"][:3]:
                p["behavior"], p["invert"] = beh, inv
            out.append((f"split-{beh}-invert{int(inv)}", v, []))
    v = copy.deepcopy(base)
    v["pre_tokenizer"]["pretokenizers"].insert(0, {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithNext", "invert": False})
    v["pre_tokenizer"]["pretokenizers"].insert(0, {"type": "Split", "pattern": {"String": "a.b|"}, "behavior": "Isolated", "invert": False})
    out.append(("split-string", v, ["a.b|", "a.b|a.b|"]))
    v = copy.deepcopy(base)  # empty matches: lookahead, \b, x*
    v["pre_tokenizer"]["pretokenizers"][:0] = [
        {"type": "Split", "pattern": {"Regex": "(?=[A-Z])"}, "behavior": "Isolated", "invert": False},
        {"type": "Split", "pattern": {"Regex": "\\b"}, "behavior": "MergedWithPrevious", "invert": False},
        {"type": "Split", "pattern": {"Regex": "x*"}, "behavior": "Removed", "invert": False}]
    out.append(("split-empty-matches", v, ["xxAxBx", "AbCd"]))
    v = copy.deepcopy(base)
    v["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    out.append(("bytelevel-gpt2", v, []))
    v = copy.deepcopy(base)
    v["pre_tokenizer"]["pretokenizers"][-1]["add_prefix_space"] = True
    out.append(("bytelevel-prefix-space", v, []))
    for name, p in [("whitespace", {"type": "Whitespace"}), ("whitespacesplit", {"type": "WhitespaceSplit"}),
                    ("digits", {"type": "Digits", "individual_digits": True}),
                    ("digits-runs", {"type": "Digits", "individual_digits": False}),
                    ("punctuation", {"type": "Punctuation", "behavior": "Isolated"}),
                    ("punctuation-contig", {"type": "Punctuation", "behavior": "Contiguous"})]:
        v = copy.deepcopy(base)
        v["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [p, {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
        out.append(("pre-" + name, v, []))
    # added tokens with every flag, overlapping contents, one not in the vocabulary
    v = copy.deepcopy(base)
    nid = max(t["id"] for t in v["added_tokens"]) + 1
    def at(content, **kw):
        nonlocal nid
        d = {"id": nid, "content": content, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": False}
        d.update(kw)
        nid += 1
        v["added_tokens"].append(d)
    at("[L]", lstrip=True)
    at("[R]", rstrip=True)
    at("[LR]", lstrip=True, rstrip=True, special=True)
    at("word", single_word=True)
    at("fox", single_word=True, normalized=True)
    at("quick br", normalized=True)
    at("quick")
    at("<｜User｜>x")
    at(" [S]", lstrip=True)
    at("[N]", normalized=True, rstrip=True)
    extra = ["[L]", "[R]", "[LR]", "word", "fox", "quick br", "quick", "<｜User｜>x", " [S]", "[N]", "words", "_word", "word_"]
    out.append(("added-flags", v, extra))
    # a normalizer, so that normalized=true tokens are matched against normalized text
    v2 = copy.deepcopy(v)
    v2["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Strip", "strip_left": True, "strip_right": False},
        {"type": "Replace", "pattern": {"String": "qu"}, "content": "QU"},
        {"type": "Replace", "pattern": {"Regex": "[0-9]{2}"}, "content": "#"},
        {"type": "Prepend", "prepend": "\u2581"}]}
    out.append(("normalizer", v2, extra + ["QUick br"]))
    # legacy "a b" merges and ignore_merges
    v = copy.deepcopy(base)
    v["model"]["merges"] = ["#version: 0.2"] + [" ".join(m) for m in v["model"]["merges"]]
    v["model"]["ignore_merges"] = True
    out.append(("legacy-merges-ignore-merges", v, []))
    # no byte-level step: characters outside the vocabulary -> unk (fused or not) or byte fallback
    for name, kw in [("unk", {"unk_token": "<unk>"}), ("unk-fused", {"unk_token": "<unk>", "fuse_unk": True}),
                     ("byte-fallback", {"unk_token": "<unk>", "byte_fallback": True}), ("dropped", {})]:
        v = copy.deepcopy(base)
        v["pre_tokenizer"] = {"type": "WhitespaceSplit"}
        voc = v["model"]["vocab"]
        voc["<unk>"] = len(voc)
        if name == "byte-fallback":
            for b in range(0, 256, 2):  # half of them, so that fallback fails sometimes
                voc["<0x%02X>" % b] = len(voc)
        v["model"].update(kw)
        v["decoder"] = None
        out.append(("model-" + name, v, []))
    # DeepSeek-V3's size: 128000 tokens (the tiny vocabulary plus concatenations of its tokens,
    # each with its merge), 800 special placeholder tokens after them
    v = copy.deepcopy(base)
    rng = random.Random(5)
    voc, merges = v["model"]["vocab"], v["model"]["merges"]
    toks = [t for t in voc if not t.startswith("<｜")]
    while len(voc) < 128000:
        a, b = rng.choice(toks), rng.choice(toks)
        if len(a) + len(b) <= 16 and a + b not in voc:
            voc[a + b] = len(voc)
            merges.append([a, b])
            toks.append(a + b)
    for i in range(800):
        v["added_tokens"].append({"id": 128000 + i, "content": f"<｜place▁holder▁no▁{i}｜>", "single_word": False,
                                  "lstrip": False, "rstrip": False, "normalized": False, "special": True})
    out.append(("large-vocab", v, ["<｜place▁holder▁no▁7｜>", "<｜place▁holder▁no▁799｜>", "<｜place▁holder▁no▁8000｜>"]))
    # continuing_subword_prefix / end_of_word_suffix on a small synthetic BPE
    voc, merges = {}, []
    for c in LETTERS:
        voc[c] = len(voc)
        voc["##" + c] = len(voc)
        voc[c + "</w>"] = len(voc)
        voc["##" + c + "</w>"] = len(voc)
    for a in LETTERS[:5]:
        for b in LETTERS[3:]:
            for bb, suf in [("##" + b, ""), ("##" + b + "</w>", "</w>")]:
                if a + b + suf not in voc:
                    voc[a + b + suf] = len(voc)
                merges.append([a, bb])
    v = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
         "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": None, "decoder": None,
         "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "##",
                   "end_of_word_suffix": "</w>", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                   "vocab": voc, "merges": merges}}
    out.append(("prefix-suffix", v, ["abc", "adgj", "ab ef", "dd"]))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cli")
    ap.add_argument("tokenizer")
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only")
    a = ap.parse_args()
    base = json.load(open(a.tokenizer, encoding="utf-8"))
    fails = 0
    with tempfile.TemporaryDirectory() as d:
        for name, tj, extra in variants(base):
            if a.only and a.only != name:
                continue
            rng = random.Random(f"{a.seed}-{name}")
            texts = [b"", b" ", b"\n"] + [rand_text(rng, extra) for _ in range(a.cases)] + \
                [rand_bytes(rng) for _ in range(a.cases // 5)]
            if name == "prefix-suffix":
                texts = [" ".join("".join(rng.choice(LETTERS + "xyz") for _ in range(rng.randint(1, 7)))
                                  for _ in range(rng.randint(0, 5))).encode() for _ in range(a.cases)]
            path = os.path.join(d, "tokenizer.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(tj, f, ensure_ascii=False)
            tok = Tokenizer.from_file(path)
            exp = [" ".join(map(str, tok.encode(t.decode("utf-8", "replace"), add_special_tokens=False).ids)) for t in texts]
            r = subprocess.run([a.cli, path, "--lines"], input=b"".join(base64.b64encode(t) + b"\n" for t in texts),
                               capture_output=True)
            got = r.stdout.decode().split("\n")[:len(texts)]
            bad = [i for i in range(len(texts)) if i >= len(got) or got[i] != exp[i]]
            if r.returncode != 0:
                print(f"{name}: tok_cli exit {r.returncode}: {r.stderr.decode()[-500:]}")
                fails += 1
            for i in bad[:3]:
                print(f"{name}: text {texts[i]!r}\n  tokenizers: {exp[i]}\n  dsv3:       {got[i] if i < len(got) else '(none)'}")
            fails += len(bad)
            # decode: ids -> text, against Tokenizer.decode (valid UTF-8 output only)
            ndec = 0
            for t in texts[: 40 if name == "deepseek" else 2 if name == "large-vocab" else 8]:
                ids = tok.encode(t.decode("utf-8", "replace"), add_special_tokens=False).ids
                for skip in (False, True):
                    want = tok.decode(ids, skip_special_tokens=skip)
                    r = subprocess.run([a.cli, path, "--decode"] + (["--skip-special"] if skip else []),
                                       input=" ".join(map(str, ids)).encode(), capture_output=True)
                    if r.stdout.decode("utf-8", "replace") != want:
                        print(f"{name}: decode{' skip_special' if skip else ''} of {ids}: {r.stdout!r} != {want!r}")
                        fails += 1
                    ndec += 1
            print(f"{name}: {len(texts)} texts, {len(bad)} differ; {ndec} decodes")
    print("FAIL" if fails else "all equal")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())

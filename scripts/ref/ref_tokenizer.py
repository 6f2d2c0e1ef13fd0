#!/usr/bin/env python3
"""Expected token ids from Hugging Face `tokenizers` for the tokenizer test corpus.

Usage: ref_tokenizer.py TOKENIZER_JSON CORPUS OUT
  e.g. scripts/ref/ref_tokenizer.py models/dsv3-tiny/tokenizer.json \
         tests/data/tokenizer_corpus.txt tests/data/tokenizer_ids.txt

CORPUS: one case per line, base64 of the raw bytes (so invalid UTF-8 can be tested); blank lines
are skipped.  Bytes that are not valid UTF-8 are read as Python's bytes.decode("utf-8",
"replace"), which is what dsv3-run's tokenizer does too.
OUT: one line per case, `Tokenizer.from_file(TOKENIZER_JSON).encode(text,
add_special_tokens=False).ids` space-separated.  Then the chat cases, one line each:
  `#chat <ids>` for the first conversation, `#chat1 <ids>`, `#chat2 <ids>`... for the others.
The conversations come from CORPUS with its extension replaced by `.chat.json` (a list of
{"messages": [...], "add_generation_prompt": bool}); without that file, one built-in two-turn
conversation.  Each is rendered with the chat_template of tokenizer_config.json (beside
TOKENIZER_JSON) through jinja2 the way transformers renders it (trim_blocks, lstrip_blocks), and
the rendered string is encoded like the corpus.  The template is also rendered by hand (BOS, then
system text / <｜User｜>text / <｜Assistant｜>text EOS, then <｜Assistant｜>) and the two must agree.
Versions go to stderr."""
import base64, json, os, sys

import tokenizers
from tokenizers import Tokenizer

DEFAULT_CHAT = [{"messages": [{"role": "user", "content": "Write a function that adds two numbers."},
                              {"role": "assistant", "content": "def add(a, b):\n    return a + b"},
                              {"role": "user", "content": "Now subtract them."}], "add_generation_prompt": True}]


def by_hand(conv, bos, eos):
    s = bos
    for m in conv["messages"]:
        if m["role"] == "system":
            s += m["content"]
        elif m["role"] == "user":
            s += "<｜User｜>" + m["content"]
        elif m["role"] == "assistant":
            s += "<｜Assistant｜>" + m["content"] + eos
    if conv["add_generation_prompt"]:
        s += "<｜Assistant｜>"
    return s


def token_str(v, default):
    if isinstance(v, dict):
        return v.get("content", default)
    return v if isinstance(v, str) else default


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    tok_path, corpus, out_path = sys.argv[1:]
    tok = Tokenizer.from_file(tok_path)
    out = []
    for line in open(corpus):
        line = line.strip()
        if not line:
            continue
        text = base64.b64decode(line).decode("utf-8", "replace")
        out.append(" ".join(map(str, tok.encode(text, add_special_tokens=False).ids)))

    cfg_path = os.path.join(os.path.dirname(tok_path), "tokenizer_config.json")
    cfg = json.load(open(cfg_path, encoding="utf-8")) if os.path.exists(cfg_path) else {}
    bos = token_str(cfg.get("bos_token"), "<｜begin▁of▁sentence｜>")
    eos = token_str(cfg.get("eos_token"), "<｜end▁of▁sentence｜>")
    chat_path = os.path.splitext(corpus)[0] + ".chat.json"
    convs = json.load(open(chat_path, encoding="utf-8")) if os.path.exists(chat_path) else DEFAULT_CHAT
    template = cfg.get("chat_template")
    env = None
    try:
        import jinja2
        env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    except ImportError:
        print("jinja2 not installed: chat rendered by hand only", file=sys.stderr)
    for i, conv in enumerate(convs):
        text = by_hand(conv, bos, eos)
        if env is not None and template:
            rendered = env.from_string(template).render(messages=conv["messages"], bos_token=bos, eos_token=eos,
                                                        add_generation_prompt=conv["add_generation_prompt"])
            if rendered != text:
                sys.exit(f"chat {i}: the chat_template renders {rendered!r}, by hand {text!r}")
        ids = tok.encode(text, add_special_tokens=False).ids
        out.append(("#chat " if i == 0 else f"#chat{i} ") + " ".join(map(str, ids)))
    with open(out_path + ".tmp", "w") as f:
        f.write("\n".join(out) + "\n")
    os.replace(out_path + ".tmp", out_path)
    print(f"tokenizers {tokenizers.__version__}: {len(out) - len(convs)} cases, {len(convs)} chats -> {out_path}",
          file=sys.stderr)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Expected token ids from Hugging Face `tokenizers` for the tokenizer test corpus.

Usage: ref_tokenizer.py TOKENIZER_JSON CORPUS OUT
CORPUS: one case per line, base64 of the raw bytes (so invalid UTF-8 can be tested).
OUT: one line per case, the ids space-separated.  Bytes that are not valid UTF-8 are read as
Python's bytes.decode("utf-8", "replace") (what dsv3-run's tokenizer does too).
The last line of OUT is a chat-template case: `#chat <ids>` for a two-turn conversation
rendered with tokenizer_config.json's template semantics (BOS, <｜User｜>, <｜Assistant｜>...EOS)."""
import base64, sys
from tokenizers import Tokenizer

tok = Tokenizer.from_file(sys.argv[1])
out = []
for line in open(sys.argv[2]):
    line = line.strip()
    if not line:
        continue
    text = base64.b64decode(line).decode("utf-8", "replace")
    out.append(" ".join(map(str, tok.encode(text, add_special_tokens=False).ids)))
BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
chat = BOS + "<｜User｜>" + "Write a function that adds two numbers." + "<｜Assistant｜>" + \
    "def add(a, b):\n    return a + b" + EOS + "<｜User｜>" + "Now subtract them." + "<｜Assistant｜>"
out.append("#chat " + " ".join(map(str, tok.encode(chat, add_special_tokens=False).ids)))
open(sys.argv[3], "w").write("\n".join(out) + "\n")

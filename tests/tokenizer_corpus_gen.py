#!/usr/bin/env python3
"""Writes tests/data/tokenizer_corpus.txt (base64 per line): code, prose, whitespace runs, CJK,
emoji, numbers, punctuation, special tokens in text, invalid UTF-8.  Deterministic."""
import base64, random
random.seed(7)
cases = [
    "", " ", "  ", "\t", "\n", "\r\n", "\n\n\n", "   \n  \n", "a", "hello world", "Hello, World!",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "import os\nimport sys\nfrom typing import List, Optional\n\n\nclass Foo(object):\n    pass\n",
    "for i in range(10):\n\tprint(i ** 2, end=' ')\n", "x = {'a': 1, \"b\": [2, 3.5e-7, -4]}\n",
    "if __name__ == \"__main__\":\n    main()\n", "    \t  trailing spaces   \n", "a  b   c    d",
    "It's a dog's life; we're here, they'll go, I'd say, you've seen, she's done.",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX!",
    "1", "12", "123", "1234", "12345", "1234567890", "3.14159", "1,000,000", "0x1F4A9", "v2.0.1-rc3",
    "中文测试：你好，世界！", "日本語のテキストとカタカナ、ひらがな。", "한국어 텍스트", "混合 mixed 文本 text 123",
    "emoji 😀 😃 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️", "math: ∑ᵢ xᵢ² ≤ ∞ → ∀ε>0", "Ünïcödé àccénts çédille ß",
    "<｜begin▁of▁sentence｜>hello<｜end▁of▁sentence｜>", "<｜User｜>What is 2+2?<｜Assistant｜>4",
    "text<｜▁pad▁｜>more", "<｜begin▁of▁sentence｜><｜begin▁of▁sentence｜>", "<|not special|>",
    "!!!???...,,,;;;:::", "a---b___c===d", "==> <== != >= <= ** // %%", "@decorator\ndef f(*args, **kwargs): ...",
    "http://example.com/path?q=1&r=2#frag", "user@example.com", "C:\\Users\\name\\file.txt",
    "\"quoted\" 'single' `back`", "tab\tseparated\tvalues\n1\t2\t3", " leading space", "trailing space ",
    " " * 17 + "x", "\n" * 5 + "y", "a\r\nb\rc\nd", "\u00a0nbsp\u2009thin\u3000ideographic",
    "ＦＵＬＬＷＩＤＴＨ ｌｅｔｔｅｒｓ", "Ελληνικά και русский текст", "עברית وعربي",
]
raw = [c.encode("utf-8") for c in cases]
# invalid UTF-8
raw += [b"\xff", b"abc\x80def", b"\xc3\x28", b"\xe2\x82", b"\xf0\x9f\x98", b"ok\xed\xa0\x80surrogate", b"\xf4\x90\x80\x80",
        b"\xc0\xaf overlong", b"mixed \xe4\xb8\xad\xff\xfe end"]
# random code-like and unicode strings
alphabet = "abcdefghijklmnopqrstuvwxyzABCXYZ0123456789 _-+=()[]{}:;,.'\"\n\t#@!?/\\*&^%$中文日本😀é"
for _ in range(150):
    raw.append("".join(random.choice(alphabet) for _ in range(random.randint(1, 80))).encode())
raw.append(open(__file__, "rb").read())  # a longer real file
open("tests/data/tokenizer_corpus.txt", "w").write("\n".join(base64.b64encode(r).decode() for r in raw) + "\n")
print(len(raw), "cases")

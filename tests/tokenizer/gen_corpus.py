#!/usr/bin/env python3
"""Writes the tokenizer equality corpus: tests/data/tokenizer_corpus.txt, one case per line as
base64 of the raw bytes (so that invalid UTF-8 fits on a line), and the chat conversations
tests/data/tokenizer_corpus.chat.json.  Deterministic (fixed seed, no file contents that change).

Expected ids come from scripts/ref/ref_tokenizer.py (Hugging Face `tokenizers`).  A blank line
would be the empty string, which the readers skip: the empty string is tested in the C test."""
import base64, json, os, random

rng = random.Random(20240601)
here = os.path.dirname(os.path.abspath(__file__))
data = os.path.join(here, "..", "data")

PY = [
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "import os\nimport sys\nfrom typing import List, Optional\n\n\nclass Foo(object):\n    pass\n",
    "for i in range(10):\n\tprint(i ** 2, end=' ')\n",
    "x = {'a': 1, \"b\": [2, 3.5e-7, -4]}\n",
    "if __name__ == \"__main__\":\n    main()\n",
    "@decorator\ndef f(*args, **kwargs): ...",
    "class Node:\n    def __init__(self, value, next=None):\n        self.value = value\n        self.next = next\n\n"
    "    def __repr__(self):\n        return f\"Node({self.value!r})\"\n",
    "async def fetch(session, url):\n    async with session.get(url) as r:\n        return await r.json()\n",
    "result = [x**2 for x in range(100) if x % 3 == 0]  # squares\nprint(sum(result))\n",
    "try:\n    open('/nonexistent')\nexcept (IOError, OSError) as e:\n    raise RuntimeError(str(e)) from e\nfinally:\n    pass\n",
    "lambda x, y=2, *a, k=None, **kw: (x, y, a, k, kw)",
    "    \"\"\"Docstring with 'quotes' and \\\"escapes\\\".\"\"\"\n",
    "matrix = [[1, 2, 3],\n          [4, 5, 6],\n          [7, 8, 9]]\n",
    "s = 'it''s'; t = r'\\d+\\s*'; u = b'\\x00\\xff'\n",
    "while True:\n\t\tif done: break\n\t\telse:\n\t\t\tcontinue\n",
    "#include <stdio.h>\nint main(void) {\n  printf(\"%d\\n\", 42);\n  return 0;\n}\n",
    "{\"name\": \"dsv3\", \"version\": [0, 1, 0], \"ok\": true, \"none\": null}\n",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC LIMIT 10;",
    "<div class=\"x\"><a href=\"https://example.com/?q=1&amp;r=2\">link</a></div>",
    "fn main() { let v: Vec<u32> = (0..10).map(|x| x * x).collect(); println!(\"{:?}\", v); }",
    "$ ls -la | grep '^d' && echo \"done\" > /dev/null 2>&1",
]
PROSE = [
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX!",
    "It's a dog's life; we're here, they'll go, I'd say, you've seen, she's done.",
    "I'M SHOUTING, YOU'RE NOT, HE'LL SEE, WE'VE WON, THEY'D KNOW, IT'S 'QUOTED'.",
    "Don't, won't, can't, shouldn't've, y'all, o'clock, rock 'n' roll, '90s.",
    "In 1969, Apollo 11 landed on the Moon. Neil Armstrong said: \"That's one small step for [a] man, one giant leap for mankind.\"",
    "Hello, World!", "hello world", "a", "A", "I", "ok.", "Mr. Smith went to Washington D.C. on Jan. 5th.",
    "Large language models are trained on trillions of tokens; their tokenizers must be exact down to the last byte.",
    "She sells sea-shells by the sea-shore -- or does she?  Nobody knows...",
    "Ünïcödé àccénts çédille ß naïve café résumé coöperate",
    "Ελληνικά και русский текст, עברית وعربي, हिन्दी भाषा, ภาษาไทย",
    "ＦＵＬＬＷＩＤＴＨ ｌｅｔｔｅｒｓ and ｄｉｇｉｔｓ １２３４",
]
WS = ["", " ", "  ", "\t", "\n", "\r\n", "\r", "\n\n\n", "   \n  \n", " \t \t ", "\t\t\t", "    \t  trailing spaces   \n",
      "a  b   c    d", " leading space", "trailing space ", " " * 17 + "x", "\n" * 5 + "y", "a\r\nb\rc\nd",
      "line1\r\n\r\nline3\r\n", "x \n y \n\n z", "end with newlines\n\n", "\u00a0nbsp\u2009thin\u3000ideographic",
      "\u2028line sep\u2029para sep\u0085nel", "\x0bvt\x0cff", "tab\tseparated\tvalues\n1\t2\t3", "   ", "\n \n \n",
      "word \t\n word", "\t def f():\n\t\treturn 1 \n"]
CJK = ["中文测试：你好，世界！", "日本語のテキストとカタカナ、ひらがな。", "한국어 텍스트", "混合 mixed 文本 text 123",
       "我爱北京天安门，天安门上太阳升。", "東京都渋谷区１－２－３", "ｶﾀｶﾅ半角", "中文English中文123中文", "漢字かなカナ混じり文",
       "《三国演义》第一回：宴桃园豪杰三结义", "这是一个很长的句子，其中包含了许多不同的汉字和标点符号；它应该被正确地切分。",
       "𠀀𠀁𪚥 (CJK Extension B)", "〇一二三四五六七八九十百千万亿"]
EMOJI = ["emoji 😀 😃 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️", "👩‍💻👨‍🔬🏳️‍🌈🏴‍☠️", "1️⃣ #️⃣ *️⃣", "🇺🇸🇬🇧🇯🇵🇨🇳",
         "👋🏻👋🏼👋🏽👋🏾👋🏿", "I ❤️ NY 🗽!", "😀😀😀😀😀😀😀😀", "🧑‍🤝‍🧑 and 🫶", "text🙂text", "\u200d\u200c\ufe0f\ufe0e"]
NUMS = [str(10 ** k + rng.randint(0, 10 ** k)) for k in range(0, 25)] + [
    "1", "12", "123", "1234", "12345", "1234567890", "3.14159", "1,000,000", "0x1F4A9", "v2.0.1-rc3", "-42", "+7",
    "1e10", "6.02e23", "2024-06-01", "12:34:56", "99.9%", "$1,234.56", "€5", "½ ¾ ⅞", "x² y³ z⁴", "H₂O", "٣٤٥ ۱۲۳",
    "१२३४", "１２３４５", "Ⅻ ⅻ ①②③", "0.000001", "007", "1 2 3 4 5", "a1b22c333d4444", "3rd 21st 100th"]
PUNCT = ["!!!???...,,,;;;:::", "a---b___c===d", "==> <== != >= <= ** // %%", "http://example.com/path?q=1&r=2#frag",
         "user@example.com", "C:\\Users\\name\\file.txt", "\"quoted\" 'single' `back`", "(((nested)))", "[{<>}]",
         "...", "—– - ‐", "«guillemets» „quotes“ ‘single’ “double”", "¿Qué? ¡Sí!", "#hashtag @mention $var %s &amp;",
         "a.b.c", "x->y=>z", "::std::vector<int>", "/* comment */ // line", "'''", "\"\"\"", "!'s", ".'t", "?'re",
         "@'ve", "~'ll", "^'d", "'m", "'S", "'LL"]
SPECIAL = ["<｜begin▁of▁sentence｜>hello<｜end▁of▁sentence｜>", "<｜User｜>What is 2+2?<｜Assistant｜>4",
           "text<｜▁pad▁｜>more", "<｜begin▁of▁sentence｜><｜begin▁of▁sentence｜>", "<|not special|>",
           " <｜User｜> spaced <｜Assistant｜> ", "<｜User｜", "｜User｜>", "<｜User｜><｜User｜>x", "<｜Assistant｜>\n\n",
           "a<｜end▁of▁sentence｜>b<｜end▁of▁sentence｜>c", "<｜user｜>", "<｜begin▁of▁sentence｜", "<<｜User｜>>",
           "\n<｜User｜>\n", "<｜▁pad▁｜><｜▁pad▁｜><｜▁pad▁｜>"]
INVALID = [b"\xff", b"abc\x80def", b"\xc3\x28", b"\xe2\x82", b"\xf0\x9f\x98", b"ok\xed\xa0\x80surrogate",
           b"\xf4\x90\x80\x80", b"\xc0\xaf overlong", b"mixed \xe4\xb8\xad\xff\xfe end", b"\x80\x80\x80",
           b"\xe0\x80\x80", b"\xe0\xa0", b"\xf0\x80\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xfe\xff", b"\xc2",
           b"tail\xe4", b"\xed\x9f\xbf ok \xed\xbf\xbf", b"\xf0\x90\x80", b"\xf3\xbf\xbf\xbf\xf4\x8f\xbf\xbf",
           b"\xc1\xbf", b"a\x00b\x00", b"\x00", b"\x01\x02\x1f\x7f", b"<\xef\xbd\x9cUser\xef\xbd\x9c>\xff",
           b"\xef\xbf\xbd literal replacement char", b"\xef\xbb\xbfBOM"]

cases = [c.encode("utf-8") for group in (PY, PROSE, WS, CJK, EMOJI, NUMS, PUNCT, SPECIAL) for c in group]
cases += INVALID

# random code-like strings, random code points from every plane, random bytes
alphabet = "abcdefghijklmnopqrstuvwxyzABCXYZ0123456789 _-+=()[]{}:;,.'\"\n\t#@!?/\\*&^%$中文日本😀é\r"
for _ in range(120):
    cases.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80))).encode())
for _ in range(40):
    s = []
    for _ in range(rng.randint(1, 30)):
        c = rng.choice([rng.randint(0x20, 0x7e), rng.randint(0x80, 0x7ff), rng.randint(0x800, 0xd7ff),
                        rng.randint(0xe000, 0xfffd), rng.randint(0x10000, 0x10ffff)])
        s.append(chr(c))
    cases.append("".join(s).encode("utf-8"))
for _ in range(30):
    cases.append(bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 24))))
# fragments glued together: the boundaries between classes are where pre-tokenizers differ
pool = PY + PROSE + WS + CJK + EMOJI + NUMS + PUNCT + SPECIAL
for _ in range(60):
    cases.append("".join(rng.choice(pool)[: rng.randint(1, 40)] for _ in range(rng.randint(2, 6))).encode())
cases.append(("\n".join(PY) + "\n\n" + "\n".join(PROSE)).encode())  # one long case

cases = [c for c in cases if c]  # the empty string is tested separately (a blank line is skipped)
with open(os.path.join(data, "tokenizer_corpus.txt"), "w") as f:
    f.write("".join(base64.b64encode(c).decode() + "\n" for c in cases))

chats = [
    # first: the conversation the runtime's own test (tests/run/test_tokenizer.c) checks
    {"messages": [{"role": "user", "content": "Write a function that adds two numbers."},
                  {"role": "assistant", "content": "def add(a, b):\n    return a + b"},
                  {"role": "user", "content": "Now subtract them."}], "add_generation_prompt": True},
    {"messages": [{"role": "system", "content": "You are a helpful assistant."},
                  {"role": "user", "content": "你好！What's 2+2?"},
                  {"role": "assistant", "content": "2 + 2 = 4 😀"},
                  {"role": "user", "content": "  And\ttimes?\r\n"}], "add_generation_prompt": True},
    {"messages": [{"role": "user", "content": "Say <｜end▁of▁sentence｜> please"},
                  {"role": "assistant", "content": ""}], "add_generation_prompt": False},
    {"messages": [], "add_generation_prompt": True},
]
with open(os.path.join(data, "tokenizer_corpus.chat.json"), "w", encoding="utf-8") as f:
    json.dump(chats, f, ensure_ascii=False, indent=1)
    f.write("\n")
print(len(cases), "cases,", len(chats), "conversations")

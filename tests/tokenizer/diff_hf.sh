#!/bin/bash
# Live comparison with Hugging Face `tokenizers` (tests/tokenizer/diff_hf.py); 77 = skipped.
set -u
CLI=$BUILD/tests/tok_cli
[ -x "$CLI" ] || { echo "tok_cli not built: skipped"; exit 77; }
PY=${PYTHON:-python3}
[ -n "$PY" ] && "$PY" -c "import tokenizers" 2>/dev/null || { echo "python3 tokenizers not installed: skipped"; exit 77; }
exec "$PY" "$SRC/tests/tokenizer/diff_hf.py" "$CLI" "$DSV3_TINY/tokenizer.json" --cases "${DSV3_TOK_CASES:-150}"

#!/usr/bin/env bash
# dsv3-run end to end on models/dsv3-tiny: greedy generation is deterministic and looks like
# Python, --tokenize, --dump-logits, --input-file, chat over stdin, --json, errors.
. "$SRC/tests/lib.sh"
M=$DSV3_TINY
expect "raw greedy" "$RUN" --ckpt "$M" --raw --prompt "def fibonacci(n):" --max-new-tokens 24 --temperature 0 -q
cp "$T/out" "$T/first"
contains "completion follows the prompt" "$T/out" "^def fibonacci(n):"
contains "python-looking" "$T/out" '"""\|return\|    '
expect "deterministic" "$RUN" --ckpt "$M" --raw --prompt "def fibonacci(n):" --max-new-tokens 24 --temperature 0 -q --threads 1
cmp -s "$T/out" "$T/first" && ok || fail "greedy output depends on the thread count"
expect "stats on stderr" "$RUN" --ckpt "$M" --raw --prompt "x = " --max-new-tokens 4 --temperature 0
contains "prefill/decode rates" "$T/err" "prefill .* tok/s.*decode .* tok/s"
printf 'def f(x):\n    return x\n' | "$RUN" --ckpt "$M" --tokenize > "$T/ids" && ok || fail "--tokenize"
contains "tokenize ids" "$T/ids" "^481 [0-9 ]*$"
expect "sampling with a seed" "$RUN" --ckpt "$M" --raw --prompt "import" --max-new-tokens 8 --temperature 0.8 --top-p 0.9 --seed 3 -q
cp "$T/out" "$T/s1"
expect "same seed" "$RUN" --ckpt "$M" --raw --prompt "import" --max-new-tokens 8 --temperature 0.8 --top-p 0.9 --seed 3 -q
cmp -s "$T/out" "$T/s1" && ok || fail "same seed, different samples"
expect "dump logits" "$RUN" --ckpt "$M" --raw --prompt "class A:" --max-new-tokens 3 --temperature 0 -q --dump-logits "$T/lg.safetensors"
expect "dump is valid" "$INSPECT" --tensors "$T/lg.safetensors"
contains "dump shape" "$T/out" "logits .*F32 .*\[[0-9]*, 2048\]"
printf 'def add(a, b):\nprint("hi")\n' > "$T/prompts"
expect "input file json" "$RUN" --ckpt "$M" --input-file "$T/prompts" --max-new-tokens 5 --temperature 0 --json -q
[ "$(grep -c '"completion"' "$T/out")" = 2 ] && ok || fail "--input-file --json: $(cat "$T/out")"
printf 'hello\n/clear\nhi again\n/exit\n' | "$RUN" --ckpt "$M" --max-new-tokens 4 --temperature 0 -q > "$T/chat" 2>&1 && ok || fail "chat over stdin"
expect_error "no checkpoint" "no such file or directory" "$RUN" --ckpt "$T/none" --prompt hi
expect_error "checkpoint is a file" "config.json: not a directory" "$RUN" --ckpt "$M/config.json" --prompt hi
expect_error "bad id" "token id 99999 out of the vocabulary" "$RUN" --ckpt "$M" --ids "0 99999" -q
expect_error "too long" "does not fit --max-seq-len 8" "$RUN" --ckpt "$M" --raw --prompt "$(printf 'word %.0s' $(seq 40))" --max-seq-len 8 -q
# --input-file errors name the file and line: a prompt too long for the cache, a NUL byte
{ echo hello; printf 'word %.0s' $(seq 40); echo; } > "$T/long"
expect_error "input file: too long" "long: line 2: prompt of .* does not fit --max-seq-len 16" \
  "$RUN" --ckpt "$M" --input-file "$T/long" --raw --max-new-tokens 2 --max-seq-len 16 --device cpu -q
printf 'a\nb\x00c\n' > "$T/nul"
expect_error "input file: NUL byte" "nul: line 2: a NUL byte" "$RUN" --ckpt "$M" --input-file "$T/nul" --device cpu -q
# option values out of range, not numbers, NaN or overflowing: usage errors, one line
expect_error "NaN temperature" "--temperature needs" "$RUN" --ckpt "$M" --prompt hi --temperature nan -q
expect_error "infinite temperature" "--temperature needs" "$RUN" --ckpt "$M" --prompt hi --temperature inf -q
expect_error "NaN top-p" "--top-p needs" "$RUN" --ckpt "$M" --prompt hi --top-p nan -q
expect_error "seed not a number" "--seed needs" "$RUN" --ckpt "$M" --prompt hi --seed abc -q
expect_error "negative seed" "--seed needs" "$RUN" --ckpt "$M" --prompt hi --seed -1 -q
expect_error "max-new-tokens overflow" "--max-new-tokens needs" "$RUN" --ckpt "$M" --prompt hi --max-new-tokens 99999999999999999999 -q
expect "max-new-tokens past the cache: capped" "$RUN" --ckpt "$M" --raw --prompt "x = " --max-seq-len 16 --max-new-tokens 9223372036854775807 -q
finish

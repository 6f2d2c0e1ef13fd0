#!/usr/bin/env bash
# Checkpoints inside .tar / .tar.zst / .tar.gz, read without unpacking; --pack outputs;
# hostile archives (.., absolute paths, links, corrupted members).
. "$SRC/tests/lib.sh"
have_python || { echo "python3 needed to hash tensors"; exit 77; }
command -v zstd >/dev/null || { echo "zstd(1) needed to build test archives"; exit 77; }
H="$PYTHON $SRC/scripts/ref/hash_tensors.py"
tar -C "$(dirname "$DSV3_TINY")" -cf "$T/tiny.tar" dsv3-tiny
zstd -q -T0 -o "$T/tiny.tar.zst" "$T/tiny.tar"
gzip -c "$T/tiny.tar" > "$T/tiny.tar.gz"
for a in tiny.tar tiny.tar.zst tiny.tar.gz; do
  expect "inspect $a" "$INSPECT" "$T/$a"
  contains "$a tensors" "$T/out" "309 (233 in the main model"
  expect "check $a" "$INSPECT" --check "$T/$a"
done
expect "cast from tar.zst" "$CAST" -q "$T/tiny.tar.zst" "$T/c"
$H "$T/c" "$T/c.tsv"; diff "$DSV3_TESTDATA/ref_cast_bf16.tsv" "$T/c.tsv" >/dev/null && ok || fail "cast from an archive is not bit-exact"
[ -f "$T/c/tokenizer.json" ] && ok || fail "tokenizer not copied from the archive"
expect "convert from tar.gz" "$CONVERT" -q "$T/tiny.tar.gz" "$T/v" --mp 4
$H "$T/v" "$T/v.tsv"; diff "$DSV3_TESTDATA/ref_convert_mp4.tsv" "$T/v.tsv" >/dev/null && ok || fail "convert from an archive differs from convert.py"
# --pack: one archive with the manifest inside; verify after unpacking
expect "cast --pack" "$CAST" -q "$DSV3_TINY" --pack "$T/bf16.tar.zst"
[ -z "$(ls "$T" | grep parts)" ] && ok || fail "temporary directory left behind"
mkdir "$T/un"; tar --zstd -xf "$T/bf16.tar.zst" -C "$T/un" 2>/dev/null || (zstd -dc "$T/bf16.tar.zst" | tar -x -C "$T/un")
$H "$T/un" "$T/un.tsv"; diff "$DSV3_TESTDATA/ref_cast_bf16.tsv" "$T/un.tsv" >/dev/null && ok || fail "packed cast differs"
expect "verify unpacked" "$INSPECT" verify -q "$T/un"
expect "inspect the packed output" "$INSPECT" --check "$T/bf16.tar.zst"
expect "convert --pack-per-rank" "$CONVERT" -q "$DSV3_TINY" --mp 2 --pack "$T/mp2.tar.zst" --pack-per-rank
for r in 0 1; do
  zstd -dc "$T/mp2-rank$r.tar.zst" | tar -t > "$T/list$r"
  grep -qx "model$r-mp2.safetensors" "$T/list$r" && grep -qx dsv3-manifest.json "$T/list$r" && grep -qx config.json "$T/list$r" && ! grep -q "model$((1-r))-mp2" "$T/list$r" && ok || fail "rank $r archive: $(cat "$T/list$r")"
done
# hostile archives
mkdir -p "$T/h" && cd "$T/h" && cp "$DSV3_TINY"/config.json . && echo x > evil
tar -cf "$T/dotdot.tar" --transform 's,^evil,../evil,' config.json evil 2>/dev/null
expect_error "dotdot member" "member ../evil: absolute or \"..\" path refused" "$INSPECT" "$T/dotdot.tar"
tar -cPf "$T/abs.tar" "$T/h/evil" 2>/dev/null
expect_error "absolute member" "absolute or \"..\" path refused" "$INSPECT" "$T/abs.tar"
ln -sf /etc/passwd link && tar -cf "$T/link.tar" config.json link
expect_error "symlink member" "member link: links and special files are refused" "$INSPECT" "$T/link.tar"
cd - >/dev/null
# a corrupted member: damage the middle of the compressed stream
# a damaged member header (its checksum field) in the middle of the archive.  (Damage inside a
# member's compressed data is not always detectable by the reader: deflate has no per-member
# check; that is what dsv3-manifest.json and `verify` are for.)
cp "$T/tiny.tar" "$T/bad.tar"
off=$("$PYTHON" - "$T/bad.tar" <<'PY'
import sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    m = [x for x in t.getmembers() if x.isfile()][2]
print(m.offset + 148)
PY
)
printf 'XXXXXXXX' | dd of="$T/bad.tar" bs=1 seek="$off" conv=notrunc 2>/dev/null
expect_error "corrupted member header" "bad.tar: corrupted archive after [0-9]* members" "$INSPECT" "$T/bad.tar"
head -c 4000000 "$T/tiny.tar" > "$T/trunc.tar"
expect_error "truncated tar" "trunc.tar: \(member .*: corrupted or truncated\|corrupted archive\)" "$INSPECT" "$T/trunc.tar"
finish

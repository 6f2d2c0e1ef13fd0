/* dtype conversions against vectors from numpy and ml_dtypes (tests/format/gen_dtype_vectors.py),
 * plus the cases those libraries define differently (saturation) and bf16 exhaustively. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "dtype.h"

static uint32_t bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
static float fl(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

int main(void) {
  char path[4096];
  snprintf(path, sizeof path, "%s/dtype_vectors.txt", check_env("DSV3_TESTDATA"));
  FILE *f = fopen(path, "r");
  CHECK(f != NULL, "cannot open %s", path);
  if (!f) return check_done("dtype");
  char kind, fmt[8];
  unsigned a, b;
  int n_dec = 0, n_enc = 0;
  while (fscanf(f, " %c %7s %x %x", &kind, fmt, &a, &b) == 4) {
    if (kind == 'D') {
      float v = !strcmp(fmt, "e4m3") ? dsv3_e4m3_to_f32((uint8_t)a)
                : !strcmp(fmt, "e5m2") ? dsv3_e5m2_to_f32((uint8_t)a)
                                      : dsv3_f16_to_f32((uint16_t)a);
      if (b == 0x7fc00000)
        CHECK(isnan(v), "%s decode %x: want NaN got %g", fmt, a, v);
      else
        CHECK(bits(v) == b, "%s decode %x: want %08x got %08x", fmt, a, b, bits(v));
      n_dec++;
    } else {
      float x = fl(a);
      unsigned got = !strcmp(fmt, "e4m3") ? dsv3_f32_to_e4m3(x)
                     : !strcmp(fmt, "e5m2") ? dsv3_f32_to_e5m2(x)
                     : !strcmp(fmt, "bf16") ? dsv3_f32_to_bf16(x)
                                           : dsv3_f32_to_f16(x);
      CHECK(got == b, "%s encode %.9g (%08x): want %x got %x", fmt, x, a, b, got);
      n_enc++;
    }
  }
  fclose(f);
  CHECK(n_dec == 256 * 2 + 65536, "decode vectors: %d", n_dec);
  CHECK(n_enc > 10000, "encode vectors: %d", n_enc);

  /* bf16 exhaustively: decode is bits << 16; encode of a decoded value is the identity */
  for (uint32_t h = 0; h < 65536; h++) {
    float v = dsv3_bf16_to_f32((uint16_t)h);
    CHECK(bits(v) == h << 16, "bf16 decode %x", h);
    if (!isnan(v)) CHECK(dsv3_f32_to_bf16(v) == h, "bf16 round trip %x", h);
    else CHECK(isnan(dsv3_bf16_to_f32(dsv3_f32_to_bf16(v))), "bf16 NaN %x", h);
  }
  /* e4m3fn: saturating encode (the official quantiser clamps to +-448), NaN stays NaN */
  CHECK(dsv3_f32_to_e4m3(448.0f) == 0x7e, "448");
  CHECK(dsv3_f32_to_e4m3(1e9f) == 0x7e, "saturate +");
  CHECK(dsv3_f32_to_e4m3(-1e9f) == 0xfe, "saturate -");
  CHECK(dsv3_f32_to_e4m3(470.0f) == 0x7e, "470 saturates");
  CHECK((dsv3_f32_to_e4m3(NAN) & 0x7f) == 0x7f, "NaN");
  CHECK(isnan(dsv3_e4m3_to_f32(0x7f)) && isnan(dsv3_e4m3_to_f32(0xff)), "NaN codes");
  CHECK(dsv3_e4m3_to_f32(0x01) == ldexpf(1, -9), "smallest subnormal");
  CHECK(dsv3_f32_to_e4m3(ldexpf(1, -10)) == 0x00, "half of smallest subnormal ties to even 0");
  CHECK(dsv3_f32_to_e4m3(ldexpf(3, -11)) == 0x01, "0.75 of the smallest subnormal rounds to it");
  CHECK(dsv3_f32_to_e4m3(ldexpf(3, -10)) == 0x02, "1.5 subnormal steps tie to even 2");
  /* every e4m3 value round-trips */
  for (int c = 0; c < 256; c++)
    if ((c & 0x7f) != 0x7f) CHECK(dsv3_f32_to_e4m3(dsv3_e4m3_to_f32((uint8_t)c)) == c || (c == 0x80), "e4m3 %x", c);
  /* e8m0: powers of two, round up */
  CHECK(dsv3_e8m0_to_f32(127) == 1.0f && dsv3_f32_to_e8m0(1.0f) == 127, "e8m0 1");
  CHECK(dsv3_f32_to_e8m0(1.5f) == 128 && dsv3_f32_to_e8m0(0.75f) == 127, "e8m0 rounds up");
  CHECK(dsv3_f32_to_e8m0(NAN) == 0xff && isnan(dsv3_e8m0_to_f32(0xff)), "e8m0 NaN");
  /* table and bulk conversions agree with the scalar ones */
  const float *t = dsv3_e4m3_table();
  for (int c = 0; c < 256; c++) {
    float s = dsv3_e4m3_to_f32((uint8_t)c);
    CHECK((isnan(s) && isnan(t[c])) || s == t[c], "table %x", c);
  }
  int32_t iv[4] = {-5, 0, 7, 2147483647};
  float fv[4];
  dsv3_to_f32(DSV3_I32, iv, fv, 4);
  CHECK(fv[0] == -5 && fv[2] == 7 && fv[3] == 2147483648.0f, "i32 -> f32");
  float src[3] = {-3.7f, 300.f, NAN};
  uint8_t u8[3];
  dsv3_from_f32(DSV3_U8, src, u8, 3);
  CHECK(u8[0] == 0 && u8[1] == 255 && u8[2] == 0, "f32 -> u8 saturates, NaN -> 0");
  CHECK(dsv3_dtype_from_name("F8_E4M3") == DSV3_F8_E4M3 && dsv3_dtype_from_name("F8_E4M3FN") == DSV3_DT_INVALID,
        "dtype names");
  CHECK(dsv3_dtype_size(DSV3_BF16) == 2 && dsv3_dtype_size(DSV3_I64) == 8, "sizes");
  return check_done("dtype");
}

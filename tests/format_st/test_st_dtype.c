/* dtype conversions, exhaustively.
 *
 * Decode: every code of e4m3fn, e5m2, e8m0, f16 and bf16 against tables computed by numpy and
 * ml_dtypes (tests/data/dtype_tables.txt; regenerate with `pip install numpy ml_dtypes &&
 * python3 tests/format_st/gen_dtype_tables.py > tests/data/dtype_tables.txt`).
 *
 * Encode: against an independent reference built here from those tables: a binary search for
 * the two neighbouring representable values, nearest wins, a tie goes to the even code, one
 * virtual step past the largest finite value stands for overflow (Inf for f16/bf16/e5m2; e4m3fn
 * saturates to 448 as dtype.h documents, where ml_dtypes would give NaN).  Inputs: every
 * representable value, every midpoint between neighbours and the floats either side of both
 * (ties, boundaries, subnormals, overflow), both signs; a strided sweep over all 2^32 float
 * bit patterns (NaN, Inf, f32 subnormals, huge values); special cases by hand. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "dtype.h"
#include "util.h"

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

enum { E4M3, E5M2, E8M0, F16, BF16, NFMT };
static const char *FMT[NFMT] = {"e4m3", "e5m2", "e8m0", "f16", "bf16"};
static const int NCODES[NFMT] = {256, 256, 256, 65536, 65536};
static uint32_t *tab[NFMT];

static float dec(int f, uint32_t c) {
  switch (f) {
  case E4M3: return dsv3_e4m3_to_f32((uint8_t)c);
  case E5M2: return dsv3_e5m2_to_f32((uint8_t)c);
  case E8M0: return dsv3_e8m0_to_f32((uint8_t)c);
  case F16: return dsv3_f16_to_f32((uint16_t)c);
  default: return dsv3_bf16_to_f32((uint16_t)c);
  }
}
static uint32_t enc(int f, float x) {
  switch (f) {
  case E4M3: return dsv3_f32_to_e4m3(x);
  case E5M2: return dsv3_f32_to_e5m2(x);
  case E8M0: return dsv3_f32_to_e8m0(x);
  case F16: return dsv3_f32_to_f16(x);
  default: return dsv3_f32_to_bf16(x);
  }
}

/* The reference encoder.  Positive codes 0..top are finite and increase with the code in every
 * format here; vals[top + 1] is the virtual next step (2^(emax+1)). */
typedef struct {
  int top;          /* largest finite positive code */
  uint32_t sign;    /* sign bit of a code */
  uint32_t over;    /* code for overflow: Inf, or 448 for e4m3fn */
  uint32_t nan;     /* a NaN code (sign added) */
  double vals[65536 / 2 + 1];
} ref_t;
static ref_t REF[NFMT];

static void ref_init(int f) {
  ref_t *r = &REF[f];
  switch (f) {
  case E4M3: r->top = 0x7e; r->sign = 0x80; r->over = 0x7e; r->nan = 0x7f; break;
  case E5M2: r->top = 0x7b; r->sign = 0x80; r->over = 0x7c; r->nan = 0x7f; break;
  case F16: r->top = 0x7bff; r->sign = 0x8000; r->over = 0x7c00; r->nan = 0x7e00; break;
  case BF16: r->top = 0x7f7f; r->sign = 0x8000; r->over = 0x7f80; r->nan = 0x7fc0; break;
  default: r->top = 0xfe; r->sign = 0; r->over = 0xfe; r->nan = 0xff; break;
  }
  for (int c = 0; c <= r->top; c++) r->vals[c] = fl(tab[f][c]);
  /* one step past the top: top + (top - previous) rounded up to the next power of two */
  r->vals[r->top + 1] = 2 * r->vals[r->top] - r->vals[r->top - 1];
  if (f == E4M3) r->vals[r->top + 1] = 480; /* 0x7f would be 480 were it not NaN */
}

static uint32_t ref_enc(int f, float x) {
  const ref_t *r = &REF[f];
  uint32_t s = signbit(x) ? r->sign : 0;
  if (f == E8M0) { /* round |x| up to a power of two, saturate; NaN/Inf -> 0xFF */
    if (isnan(x) || isinf(x)) return 0xff;
    double a = fabs((double)x);
    if (a > r->vals[r->top]) return 0xfe;
    int lo = -1, hi = r->top; /* smallest c with vals[c] >= a lies in (lo, hi] */
    while (hi - lo > 1) {
      int mid = (lo + hi) / 2;
      if (r->vals[mid] >= a) hi = mid; else lo = mid;
    }
    return (uint32_t)hi;
  }
  if (isnan(x)) return s | r->nan;
  if (isinf(x)) return f == E4M3 ? (s | r->nan) : (s | r->over);
  double a = fabs((double)x);
  int lo = 0, hi = r->top + 1; /* largest c with vals[c] <= a */
  if (a >= r->vals[hi]) return s | r->over;
  while (hi - lo > 1) {
    int mid = (lo + hi) / 2;
    if (r->vals[mid] <= a) lo = mid; else hi = mid;
  }
  double d_lo = a - r->vals[lo], d_hi = r->vals[lo + 1] - a;
  int c = d_lo < d_hi ? lo : d_hi < d_lo ? lo + 1 : ((lo & 1) ? lo + 1 : lo);
  if (c > r->top) return s | r->over;
  return s | (uint32_t)c;
}

static long n_enc;
static void check_enc(int f, float x) {
  uint32_t want = ref_enc(f, x), got = enc(f, x);
  n_enc++;
  if (isnan(x) && f != E8M0) {
    float d = dec(f, got);
    CHECK(isnan(d) && ((f == E4M3) ? (got & 0x7f) == 0x7f : 1), "%s encode NaN (%08x): got %x", FMT[f], bits(x), got);
    return;
  }
  CHECK(got == want, "%s encode %.9g (%08x): want %x got %x", FMT[f], x, bits(x), want, got);
}

static int load_tables(void) {
  char path[4096];
  snprintf(path, sizeof path, "%s/dtype_tables.txt", check_env("DSV3_TESTDATA"));
  FILE *fp = fopen(path, "r");
  CHECK(fp != NULL, "cannot open %s", path);
  if (!fp) return -1;
  char line[512], name[16];
  int filled[NFMT] = {0};
  for (int f = 0; f < NFMT; f++) tab[f] = dsv3_xcalloc((size_t)NCODES[f], 4);
  while (fgets(line, sizeof line, fp)) {
    if (line[0] == '#') continue;
    unsigned c0, v[16];
    int k = sscanf(line, "T %15s %x %x %x %x %x %x %x %x %x %x %x %x %x %x %x %x %x", name, &c0, &v[0], &v[1], &v[2],
                   &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9], &v[10], &v[11], &v[12], &v[13], &v[14], &v[15]);
    int f = 0;
    while (f < NFMT && strcmp(FMT[f], name)) f++;
    CHECK(k == 18 && f < NFMT && c0 + 16 <= (unsigned)NCODES[f], "bad table line: %s", line);
    if (k != 18 || f == NFMT || c0 + 16 > (unsigned)NCODES[f]) continue;
    for (int i = 0; i < 16; i++) tab[f][c0 + i] = v[i];
    filled[f] += 16;
  }
  fclose(fp);
  for (int f = 0; f < NFMT; f++) CHECK(filled[f] == NCODES[f], "%s: %d of %d codes in the table", FMT[f], filled[f], NCODES[f]);
  return 0;
}

static int table_task(void *ctx, size_t i, int thread) {
  (void)thread;
  const float *t = dsv3_e4m3_table();
  ((const float **)ctx)[i] = t;
  return 0;
}

int main(void) {
  if (load_tables() != 0) return check_done("st_dtype");

  /* ---- decode: every code ---- */
  for (int f = 0; f < NFMT; f++) {
    int bad = 0;
    for (int c = 0; c < NCODES[f]; c++) {
      float want = fl(tab[f][c]), got = dec(f, (uint32_t)c);
      int ok = isnan(want) ? (isnan(got) && !signbit(want) == !signbit(got)) : bits(got) == bits(want);
      if (!ok && bad++ < 5) CHECK(0, "%s decode %x: want %08x got %08x", FMT[f], c, bits(want), bits(got));
    }
    CHECK(bad == 0, "%s: %d codes decode wrongly", FMT[f], bad);
  }
  const float *t = dsv3_e4m3_table();
  for (int c = 0; c < 256; c++) CHECK(bits(t[c]) == bits(dsv3_e4m3_to_f32((uint8_t)c)), "e4m3 table %x", c);
  /* the table is built once even when many threads ask at the same time */
  const float *seen[64];
  dsv3_parallel_for(64, 8, table_task, seen);
  for (int i = 0; i < 64; i++) CHECK(seen[i] == t, "e4m3 table pointer differs in task %d", i);

  /* ---- encode ---- */
  for (int f = 0; f < NFMT; f++) ref_init(f);
  for (int f = 0; f < NFMT; f++) {
    const ref_t *r = &REF[f];
    for (int c = 0; c <= r->top; c++) {
      double v = r->vals[c], w = r->vals[c + 1], m = (v + w) / 2;
      float xs[] = {(float)v, nextafterf((float)v, INFINITY), nextafterf((float)v, -INFINITY), (float)m,
                    nextafterf((float)m, INFINITY), nextafterf((float)m, -INFINITY), (float)w};
      for (size_t k = 0; k < sizeof xs / sizeof xs[0]; k++) {
        if (f != E8M0) CHECK((double)(float)m == m, "%s midpoint %g not a float", FMT[f], m);
        check_enc(f, xs[k]);
        check_enc(f, -xs[k]);
      }
    }
    for (uint64_t u = 0; u < (1ull << 32); u += 4099) check_enc(f, fl((uint32_t)u));
    for (uint32_t u = 0; u < 4096; u++) { /* f32 subnormals and the top of the range */
      check_enc(f, fl(u));
      check_enc(f, fl(0x7f7fffffu - u));
      check_enc(f, fl(0x80000000u | u));
    }
    float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, FLT_MAX, -FLT_MAX, FLT_MIN, 1e-45f, 1e38f};
    for (size_t k = 0; k < sizeof specials / sizeof specials[0]; k++) check_enc(f, specials[k]);
  }
  CHECK(n_enc > 5000000, "only %ld encodes", n_enc);

  /* ---- the documented edge cases, by hand (what the reference above should agree with) ---- */
  CHECK(dsv3_f32_to_e4m3(448.0f) == 0x7e && dsv3_f32_to_e4m3(464.0f) == 0x7e && dsv3_f32_to_e4m3(465.0f) == 0x7e &&
            dsv3_f32_to_e4m3(1e30f) == 0x7e && dsv3_f32_to_e4m3(-1e30f) == 0xfe,
        "e4m3 saturates to +-448");
  CHECK(dsv3_f32_to_e4m3(INFINITY) == 0x7f && dsv3_f32_to_e4m3(-INFINITY) == 0xff, "e4m3 Inf -> NaN");
  CHECK(dsv3_f32_to_e4m3(NAN) == 0x7f && dsv3_f32_to_e4m3(-NAN) == 0xff, "e4m3 NaN keeps its sign");
  CHECK(dsv3_f32_to_e4m3(ldexpf(1, -10)) == 0 && dsv3_f32_to_e4m3(ldexpf(3, -10)) == 2 &&
            dsv3_f32_to_e4m3(ldexpf(5, -10)) == 2 && dsv3_f32_to_e4m3(-ldexpf(1, -11)) == 0x80,
        "e4m3 subnormal ties to even");
  CHECK(dsv3_f32_to_e4m3(ldexpf(15, -10)) == 0x08, "e4m3 subnormal rounds up into the smallest normal");
  CHECK(dsv3_f32_to_e4m3(1.0625f) == 0x38 && dsv3_f32_to_e4m3(1.1875f) == 0x3a, "e4m3 normal ties to even");
  CHECK(dsv3_f32_to_e5m2(57344.0f) == 0x7b && dsv3_f32_to_e5m2(61439.0f) == 0x7b && dsv3_f32_to_e5m2(61440.0f) == 0x7c &&
            dsv3_f32_to_e5m2(-INFINITY) == 0xfc,
        "e5m2 overflow at the midpoint to Inf");
  CHECK(dsv3_f32_to_f16(65504.0f) == 0x7bff && dsv3_f32_to_f16(65519.99f) == 0x7bff && dsv3_f32_to_f16(65520.0f) == 0x7c00,
        "f16 overflow");
  CHECK(dsv3_f32_to_f16(ldexpf(1, -24)) == 1 && dsv3_f32_to_f16(ldexpf(1, -25)) == 0 &&
            dsv3_f32_to_f16(ldexpf(3, -25)) == 2 && dsv3_f32_to_f16(nextafterf(ldexpf(1, -25), 1)) == 1,
        "f16 subnormals");
  CHECK(dsv3_f32_to_bf16(fl(0x3f808000)) == 0x3f80 && dsv3_f32_to_bf16(fl(0x3f818000)) == 0x3f82 &&
            dsv3_f32_to_bf16(fl(0x3f808001)) == 0x3f81,
        "bf16 ties to even");
  CHECK(dsv3_f32_to_bf16(fl(0x7f7fffff)) == 0x7f80, "bf16: FLT_MAX rounds to Inf");
  CHECK((dsv3_f32_to_bf16(fl(0x7f800001)) & 0x7fc0) == 0x7fc0 && (dsv3_f32_to_bf16(fl(0xff800001)) & 0x8000),
        "bf16: a signalling NaN whose payload is in the low bits stays NaN (quiet) and keeps its sign");
  CHECK(dsv3_f32_to_e8m0(1.0f) == 127 && dsv3_f32_to_e8m0(nextafterf(1.0f, 2)) == 128 && dsv3_f32_to_e8m0(0.75f) == 127 &&
            dsv3_f32_to_e8m0(-2.0f) == 128 && dsv3_f32_to_e8m0(0.0f) == 0 && dsv3_f32_to_e8m0(1e-45f) == 0 &&
            dsv3_f32_to_e8m0(FLT_MAX) == 0xfe && dsv3_f32_to_e8m0(INFINITY) == 0xff && dsv3_f32_to_e8m0(NAN) == 0xff,
        "e8m0 rounds up, saturates, NaN/Inf -> 0xFF");

  /* ---- bulk conversions agree with the scalar ones; integers by value, with saturation ---- */
  {
    static uint8_t raw[4096 * 8];
    for (size_t i = 0; i < sizeof raw; i++) raw[i] = (uint8_t)(i * 2654435761u >> 13);
    static float out[4096], back[4096];
    for (int d = 1; d < DSV3_DT_COUNT; d++) {
      dsv3_to_f32((dsv3_dtype)d, raw, out, 4096);
      int bad = 0;
      for (size_t i = 0; i < 4096; i++) {
        float want;
        const uint8_t *p = raw + i * dsv3_dtype_size((dsv3_dtype)d);
        uint16_t h; uint32_t w; uint64_t q;
        memcpy(&h, p, 2); memcpy(&w, p, 4); memcpy(&q, p, 8);
        switch (d) {
        case DSV3_BOOL: want = p[0] ? 1.0f : 0.0f; break;
        case DSV3_U8: want = p[0]; break;
        case DSV3_I8: want = (int8_t)p[0]; break;
        case DSV3_F8_E4M3: want = dsv3_e4m3_to_f32(p[0]); break;
        case DSV3_F8_E5M2: want = dsv3_e5m2_to_f32(p[0]); break;
        case DSV3_F8_E8M0: want = dsv3_e8m0_to_f32(p[0]); break;
        case DSV3_I16: want = (int16_t)h; break;
        case DSV3_U16: want = h; break;
        case DSV3_F16: want = dsv3_f16_to_f32(h); break;
        case DSV3_BF16: want = dsv3_bf16_to_f32(h); break;
        case DSV3_I32: want = (float)(int32_t)w; break;
        case DSV3_U32: want = (float)w; break;
        case DSV3_F32: want = fl(w); break;
        case DSV3_F64: { double x; memcpy(&x, p, 8); want = (float)x; break; }
        case DSV3_I64: want = (float)(int64_t)q; break;
        default: want = (float)q; break;
        }
        if (!(bits(want) == bits(out[i]) || (isnan(want) && isnan(out[i])))) bad++;
      }
      CHECK(bad == 0, "dsv3_to_f32(%s): %d of 4096 differ from the scalar conversion", dsv3_dtype_name((dsv3_dtype)d), bad);
      if (!dsv3_dtype_is_float((dsv3_dtype)d)) continue;
      /* float targets: from_f32 is the scalar encoder element by element */
      uint8_t enc_out[4096 * 8];
      dsv3_from_f32((dsv3_dtype)d, out, enc_out, 4096);
      dsv3_to_f32((dsv3_dtype)d, enc_out, back, 4096);
      bad = 0;
      for (size_t i = 0; i < 4096; i++) {
        float want;
        switch (d) {
        case DSV3_F8_E4M3: want = dsv3_e4m3_to_f32(dsv3_f32_to_e4m3(out[i])); break;
        case DSV3_F8_E5M2: want = dsv3_e5m2_to_f32(dsv3_f32_to_e5m2(out[i])); break;
        case DSV3_F8_E8M0: want = dsv3_e8m0_to_f32(dsv3_f32_to_e8m0(out[i])); break;
        case DSV3_F16: want = dsv3_f16_to_f32(dsv3_f32_to_f16(out[i])); break;
        case DSV3_BF16: want = dsv3_bf16_to_f32(dsv3_f32_to_bf16(out[i])); break;
        default: want = out[i]; break;
        }
        if (!(bits(want) == bits(back[i]) || (isnan(want) && isnan(back[i])))) bad++;
      }
      CHECK(bad == 0, "dsv3_from_f32(%s): %d of 4096 differ", dsv3_dtype_name((dsv3_dtype)d), bad);
    }
    float src[] = {-1e30f, -129.9f, -128.5f, -0.9f, -0.0f, 0.5f, 127.9f, 255.5f, 65535.9f, 2147483648.0f,
                   9223372036854775808.0f, 18446744073709551616.0f, 1e30f, NAN};
    enum { NS = sizeof src / sizeof src[0] };
    int8_t i8[NS]; uint8_t u8[NS], b[NS]; int16_t i16[NS]; uint16_t u16[NS]; int32_t i32[NS]; uint32_t u32[NS];
    int64_t i64[NS]; uint64_t u64[NS];
    dsv3_from_f32(DSV3_I8, src, i8, NS);
    dsv3_from_f32(DSV3_U8, src, u8, NS);
    dsv3_from_f32(DSV3_BOOL, src, b, NS);
    dsv3_from_f32(DSV3_I16, src, i16, NS);
    dsv3_from_f32(DSV3_U16, src, u16, NS);
    dsv3_from_f32(DSV3_I32, src, i32, NS);
    dsv3_from_f32(DSV3_U32, src, u32, NS);
    dsv3_from_f32(DSV3_I64, src, i64, NS);
    dsv3_from_f32(DSV3_U64, src, u64, NS);
    CHECK(i8[0] == -128 && i8[1] == -128 && i8[2] == -128 && i8[3] == 0 && i8[5] == 0 && i8[6] == 127 && i8[7] == 127 && i8[13] == 0,
          "i8 saturates and truncates");
    CHECK(u8[0] == 0 && u8[3] == 0 && u8[7] == 255 && u8[8] == 255 && u8[13] == 0, "u8");
    CHECK(b[0] == 1 && b[4] == 0 && b[5] == 1, "bool");
    CHECK(i16[0] == -32768 && i16[7] == 255 && i16[8] == 32767, "i16");
    CHECK(u16[8] == 65535 && u16[9] == 65535 && u16[0] == 0, "u16");
    CHECK(i32[9] == INT32_MAX && i32[0] == INT32_MIN && i32[1] == -129, "i32");
    CHECK(u32[9] == 2147483648u && u32[12] == UINT32_MAX, "u32");
    CHECK(i64[10] == INT64_MAX && i64[0] == INT64_MIN && i64[9] == 2147483648ll && i64[13] == 0, "i64 saturates at INT64_MAX");
    CHECK(u64[11] == UINT64_MAX && u64[10] == 9223372036854775808ull && u64[0] == 0 && u64[13] == 0, "u64 saturates at UINT64_MAX");
  }

  /* ---- the dtype table ---- */
  static const char *names[] = {"BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16", "U16",
                                "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64"};
  static const size_t sizes[] = {1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 8, 8, 8};
  for (int i = 0; i < 16; i++) {
    dsv3_dtype d = dsv3_dtype_from_name(names[i]);
    CHECK(d != DSV3_DT_INVALID && !strcmp(dsv3_dtype_name(d), names[i]) && dsv3_dtype_size(d) == sizes[i],
          "dtype %s", names[i]);
    /* the reference writer's order: its Dtype enum, in the order listed above */
    if (i) CHECK(dsv3_dtype_order(d) > dsv3_dtype_order(dsv3_dtype_from_name(names[i - 1])), "order %s", names[i]);
  }
  const char *unknown[] = {"", "f32", "F8_E4M3FN", "C64", "F4", "F32 ", "INVALID"};
  for (size_t i = 0; i < sizeof unknown / sizeof *unknown; i++)
    CHECK(dsv3_dtype_from_name(unknown[i]) == DSV3_DT_INVALID, "\"%s\" accepted as a dtype", unknown[i]);
  CHECK(dsv3_dtype_from_name(NULL) == DSV3_DT_INVALID && dsv3_dtype_size(DSV3_DT_INVALID) == 0 &&
            dsv3_dtype_size(DSV3_DT_COUNT) == 0,
        "invalid dtypes");
  for (int f = 0; f < NFMT; f++) free(tab[f]);
  return check_done("st_dtype");
}

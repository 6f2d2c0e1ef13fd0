/* dtype.c - dtype table and float conversions: see dtype.h. */
#include "dtype.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

static const struct {
  const char *name;
  size_t size;
  int is_float;
} DT[DSV3_DT_COUNT] = {
    [DSV3_DT_INVALID] = {"INVALID", 0, 0}, [DSV3_BOOL] = {"BOOL", 1, 0},
    [DSV3_U8] = {"U8", 1, 0},             [DSV3_I8] = {"I8", 1, 0},
    [DSV3_F8_E5M2] = {"F8_E5M2", 1, 1},   [DSV3_F8_E4M3] = {"F8_E4M3", 1, 1},
    [DSV3_F8_E8M0] = {"F8_E8M0", 1, 1},   [DSV3_I16] = {"I16", 2, 0},
    [DSV3_U16] = {"U16", 2, 0},           [DSV3_F16] = {"F16", 2, 1},
    [DSV3_BF16] = {"BF16", 2, 1},         [DSV3_I32] = {"I32", 4, 0},
    [DSV3_U32] = {"U32", 4, 0},           [DSV3_F32] = {"F32", 4, 1},
    [DSV3_F64] = {"F64", 8, 1},           [DSV3_I64] = {"I64", 8, 0},
    [DSV3_U64] = {"U64", 8, 0},
};

dsv3_dtype dsv3_dtype_from_name(const char *name) {
  if (!name) return DSV3_DT_INVALID;
  for (int i = 1; i < DSV3_DT_COUNT; i++)
    if (strcmp(name, DT[i].name) == 0) return (dsv3_dtype)i;
  return DSV3_DT_INVALID;
}
const char *dsv3_dtype_name(dsv3_dtype dt) {
  return (dt > 0 && dt < DSV3_DT_COUNT) ? DT[dt].name : "INVALID";
}
size_t dsv3_dtype_size(dsv3_dtype dt) { return (dt > 0 && dt < DSV3_DT_COUNT) ? DT[dt].size : 0; }
int dsv3_dtype_is_float(dsv3_dtype dt) { return (dt > 0 && dt < DSV3_DT_COUNT) ? DT[dt].is_float : 0; }
/* The enum is declared in the order of the reference implementation's Dtype enum
 * (BOOL, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64),
 * whose derived ordering its writer sorts by. */
int dsv3_dtype_order(dsv3_dtype dt) { return (int)dt; }

static inline uint32_t f2u(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
static inline float u2f(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

float dsv3_bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t dsv3_f32_to_bf16(float f) {
  uint32_t u = f2u(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
  u += 0x7fffu + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}

/* Round a finite a >= 0 to a binary format with `mbits` mantissa bits, minimum normal
 * exponent `emin` and exponent bias `bias`, to nearest even.  Returns the encoding without
 * sign; an exponent overflow shows as an encoding past the format's largest finite value,
 * which the caller handles (saturate or infinity). */
static uint32_t round_fmt(float a, int mbits, int emin, int bias) {
  uint32_t u = f2u(a);
  int e = (int)((u >> 23) & 0xff) - 127;
  if (e < emin) /* subnormal in the target: a multiple of 2^(emin - mbits), exact scaling */
    return (uint32_t)rintf(ldexpf(a, mbits - emin));
  int sh = 23 - mbits;
  uint32_t m = u & 0x7fffffu, r = m >> sh, rem = m & ((1u << sh) - 1), half = 1u << (sh - 1);
  if (rem > half || (rem == half && (r & 1))) r++;
  return ((uint32_t)(e + bias) << mbits) + r; /* a mantissa carry moves into the exponent */
}

float dsv3_f16_to_f32(uint16_t h) {
  uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e == 0) {
    float v = ldexpf((float)m, -24);
    return s ? -v : v;
  }
  if (e == 31) return u2f(s | 0x7f800000u | (m << 13));
  return u2f(s | ((e + 112) << 23) | (m << 13));
}

uint16_t dsv3_f32_to_f16(float f) {
  uint32_t u = f2u(f), s = (u >> 16) & 0x8000;
  float a = fabsf(f);
  if (isnan(f)) return (uint16_t)(s | 0x7e00);
  if (isinf(a)) return (uint16_t)(s | 0x7c00);
  uint32_t r = round_fmt(a, 10, -14, 15);
  if (r >= 0x7c00) r = 0x7c00;
  return (uint16_t)(s | r);
}

float dsv3_e4m3_to_f32(uint8_t x) {
  int s = x >> 7, e = (x >> 3) & 0xf, m = x & 7;
  float v;
  if (e == 15 && m == 7) return s ? -NAN : NAN;
  if (e == 0)
    v = ldexpf((float)m, -9);
  else
    v = ldexpf((float)(8 + m), e - 10);
  return s ? -v : v;
}

uint8_t dsv3_f32_to_e4m3(float f) {
  uint8_t s = (f2u(f) >> 24) & 0x80;
  if (isnan(f) || isinf(f)) return (uint8_t)(s | 0x7f);
  uint32_t r = round_fmt(fabsf(f), 3, -6, 7);
  if (r > 0x7e) r = 0x7e; /* saturate to 448: 0x7f is NaN in e4m3fn */
  return (uint8_t)(s | r);
}

float dsv3_e5m2_to_f32(uint8_t x) { return dsv3_f16_to_f32((uint16_t)((uint16_t)x << 8)); }

uint8_t dsv3_f32_to_e5m2(float f) {
  uint8_t s = (f2u(f) >> 24) & 0x80;
  if (isnan(f)) return (uint8_t)(s | 0x7f);
  if (isinf(f)) return (uint8_t)(s | 0x7c);
  uint32_t r = round_fmt(fabsf(f), 2, -14, 15);
  if (r >= 0x7c) r = 0x7c;
  return (uint8_t)(s | r);
}

float dsv3_e8m0_to_f32(uint8_t x) { return x == 0xff ? NAN : ldexpf(1.0f, (int)x - 127); }

uint8_t dsv3_f32_to_e8m0(float f) {
  if (isnan(f)) return 0xff;
  float a = fabsf(f);
  if (a == 0) return 0;
  if (isinf(a)) return 0xff; /* no power of two lies above infinity */
  int e;
  float m = frexpf(a, &e); /* a = m * 2^e, m in [0.5, 1) */
  int p = (m == 0.5f) ? e - 1 : e; /* exact power of two stays, else round up */
  int b = p + 127;
  if (b < 0) b = 0;
  if (b > 254) b = 254; /* (2^127, FLT_MAX]: saturate rather than turn a finite scale into NaN */
  return (uint8_t)b;
}

static float e4m3_tab[256];
static pthread_once_t e4m3_once = PTHREAD_ONCE_INIT;
static void e4m3_init(void) {
  for (int i = 0; i < 256; i++) e4m3_tab[i] = dsv3_e4m3_to_f32((uint8_t)i);
}
const float *dsv3_e4m3_table(void) {
  pthread_once(&e4m3_once, e4m3_init);
  return e4m3_tab;
}

void dsv3_to_f32(dsv3_dtype s, const void *src, float *dst, size_t n) {
  size_t i;
  switch (s) {
  case DSV3_F32: memcpy(dst, src, n * 4); return;
  case DSV3_BF16: {
    const uint16_t *p = src;
    for (i = 0; i < n; i++) dst[i] = dsv3_bf16_to_f32(p[i]);
    return;
  }
  case DSV3_F16: {
    const uint16_t *p = src;
    for (i = 0; i < n; i++) dst[i] = dsv3_f16_to_f32(p[i]);
    return;
  }
  case DSV3_F8_E4M3: {
    const uint8_t *p = src;
    const float *t = dsv3_e4m3_table();
    for (i = 0; i < n; i++) dst[i] = t[p[i]];
    return;
  }
  case DSV3_F8_E5M2: {
    const uint8_t *p = src;
    for (i = 0; i < n; i++) dst[i] = dsv3_e5m2_to_f32(p[i]);
    return;
  }
  case DSV3_F8_E8M0: {
    const uint8_t *p = src;
    for (i = 0; i < n; i++) dst[i] = dsv3_e8m0_to_f32(p[i]);
    return;
  }
  case DSV3_F64: {
    const double *p = src;
    for (i = 0; i < n; i++) dst[i] = (float)p[i];
    return;
  }
#define INT_CASE(DT, T)                              \
  case DT: {                                         \
    const T *p = src;                                \
    for (i = 0; i < n; i++) dst[i] = (float)p[i];    \
    return;                                          \
  }
    INT_CASE(DSV3_U8, uint8_t)
    INT_CASE(DSV3_I8, int8_t)
    INT_CASE(DSV3_I16, int16_t)
    INT_CASE(DSV3_U16, uint16_t)
    INT_CASE(DSV3_I32, int32_t)
    INT_CASE(DSV3_U32, uint32_t)
    INT_CASE(DSV3_I64, int64_t)
    INT_CASE(DSV3_U64, uint64_t)
#undef INT_CASE
  case DSV3_BOOL: {
    const uint8_t *p = src;
    for (i = 0; i < n; i++) dst[i] = p[i] ? 1.0f : 0.0f;
    return;
  }
  default: memset(dst, 0, n * 4); return;
  }
}

/* float -> integer: truncate toward zero, saturate, NaN -> 0. */
static double sat(float v, double lo, double hi) {
  if (isnan(v)) return 0;
  double d = trunc((double)v);
  return d < lo ? lo : d > hi ? hi : d;
}
/* 64-bit targets: INT64_MAX and UINT64_MAX are not doubles, so saturate by comparison with
 * the powers of two that bound them (every float below those converts exactly). */
static int64_t sat_i64(float v) {
  if (isnan(v)) return 0;
  if (v >= 9223372036854775808.0f) return INT64_MAX;
  if (v <= -9223372036854775808.0f) return INT64_MIN;
  return (int64_t)v;
}
static uint64_t sat_u64(float v) {
  if (isnan(v) || v <= 0) return 0;
  if (v >= 18446744073709551616.0f) return UINT64_MAX;
  return (uint64_t)v;
}

void dsv3_from_f32(dsv3_dtype d, const float *src, void *dst, size_t n) {
  size_t i;
  switch (d) {
  case DSV3_F32: memcpy(dst, src, n * 4); return;
  case DSV3_BF16: {
    uint16_t *p = dst;
    for (i = 0; i < n; i++) p[i] = dsv3_f32_to_bf16(src[i]);
    return;
  }
  case DSV3_F16: {
    uint16_t *p = dst;
    for (i = 0; i < n; i++) p[i] = dsv3_f32_to_f16(src[i]);
    return;
  }
  case DSV3_F8_E4M3: {
    uint8_t *p = dst;
    for (i = 0; i < n; i++) p[i] = dsv3_f32_to_e4m3(src[i]);
    return;
  }
  case DSV3_F8_E5M2: {
    uint8_t *p = dst;
    for (i = 0; i < n; i++) p[i] = dsv3_f32_to_e5m2(src[i]);
    return;
  }
  case DSV3_F8_E8M0: {
    uint8_t *p = dst;
    for (i = 0; i < n; i++) p[i] = dsv3_f32_to_e8m0(src[i]);
    return;
  }
  case DSV3_F64: {
    double *p = dst;
    for (i = 0; i < n; i++) p[i] = src[i];
    return;
  }
#define INT_CASE(DT, T, LO, HI)                                 \
  case DT: {                                                    \
    T *p = dst;                                                 \
    for (i = 0; i < n; i++) p[i] = (T)sat(src[i], LO, HI);      \
    return;                                                     \
  }
    INT_CASE(DSV3_U8, uint8_t, 0, 255)
    INT_CASE(DSV3_I8, int8_t, -128, 127)
    INT_CASE(DSV3_I16, int16_t, -32768, 32767)
    INT_CASE(DSV3_U16, uint16_t, 0, 65535)
    INT_CASE(DSV3_I32, int32_t, -2147483648.0, 2147483647.0)
    INT_CASE(DSV3_U32, uint32_t, 0, 4294967295.0)
#undef INT_CASE
  case DSV3_I64: {
    int64_t *p = dst;
    for (i = 0; i < n; i++) p[i] = sat_i64(src[i]);
    return;
  }
  case DSV3_U64: {
    uint64_t *p = dst;
    for (i = 0; i < n; i++) p[i] = sat_u64(src[i]);
    return;
  }
  case DSV3_BOOL: {
    uint8_t *p = dst;
    for (i = 0; i < n; i++) p[i] = src[i] != 0;
    return;
  }
  default: return;
  }
}

/* dtype.h - the safetensors dtype table and scalar conversions to and from float32.
 *
 * Conversions are exact where the value is representable and round to nearest even
 * otherwise.  FP8 e4m3 ("fn": no infinities, one NaN pattern per sign, max 448) saturates
 * out-of-range finite values to +-448 and maps NaN/Inf to NaN; e5m2 is IEEE-like (has Inf);
 * e8m0 is an unsigned exponent-only format (2^(x-127), 0xFF = NaN). */
#ifndef DSV3_DTYPE_H
#define DSV3_DTYPE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  DSV3_DT_INVALID = 0,
  DSV3_BOOL,
  DSV3_U8,
  DSV3_I8,
  DSV3_F8_E5M2,
  DSV3_F8_E4M3,
  DSV3_F8_E8M0,
  DSV3_I16,
  DSV3_U16,
  DSV3_F16,
  DSV3_BF16,
  DSV3_I32,
  DSV3_U32,
  DSV3_F32,
  DSV3_F64,
  DSV3_I64,
  DSV3_U64,
  DSV3_DT_COUNT
} dsv3_dtype;

/* "F8_E4M3" -> DSV3_F8_E4M3; DSV3_DT_INVALID if unknown. */
dsv3_dtype dsv3_dtype_from_name(const char *name);
const char *dsv3_dtype_name(dsv3_dtype dt);
/* Element size in bytes; 0 for invalid. */
size_t dsv3_dtype_size(dsv3_dtype dt);
int dsv3_dtype_is_float(dsv3_dtype dt);
/* Rank used by the reference safetensors writer to order tensors (larger alignment first). */
int dsv3_dtype_order(dsv3_dtype dt);

/* Scalar conversions. */
float dsv3_bf16_to_f32(uint16_t h);
uint16_t dsv3_f32_to_bf16(float f);     /* round to nearest even; NaN stays NaN (quiet) */
float dsv3_f16_to_f32(uint16_t h);
uint16_t dsv3_f32_to_f16(float f);      /* RNE, overflow -> Inf, subnormals exact */
float dsv3_e4m3_to_f32(uint8_t x);
uint8_t dsv3_f32_to_e4m3(float f);      /* RNE, saturate to +-448, NaN -> 0x7F/0xFF */
float dsv3_e5m2_to_f32(uint8_t x);
uint8_t dsv3_f32_to_e5m2(float f);      /* RNE, overflow -> Inf */
float dsv3_e8m0_to_f32(uint8_t x);
uint8_t dsv3_f32_to_e8m0(float f);      /* |f| rounded up to a power of two (ue8m0 scales):
                                           0 and |f| <= 2^-127 -> 0x00, |f| > 2^127 saturates
                                           to 0xFE, NaN and Inf -> 0xFF; the sign is ignored */

/* Table of all 256 e4m3 values as float32 (built once, thread-safe). */
const float *dsv3_e4m3_table(void);

/* Convert n elements of `src` (dtype s) to float32.  Integers convert by value, BOOL to 0/1. */
void dsv3_to_f32(dsv3_dtype s, const void *src, float *dst, size_t n);
/* Convert n float32 values to dtype d (floats only; integer targets truncate toward zero
 * with saturation). */
void dsv3_from_f32(dsv3_dtype d, const float *src, void *dst, size_t n);

#ifdef __cplusplus
}
#endif
#endif

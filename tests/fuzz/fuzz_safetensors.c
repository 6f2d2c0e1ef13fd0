/* libFuzzer target: the safetensors header parser and validator on arbitrary bytes.
 * Every accepted file must expose only views inside the buffer. */
#include <stdint.h>
#include <string.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  dsv3_st *st;
  if (dsv3_st_open_mem(data, size, "fuzz", &st) != 0) return 0;
  volatile uint8_t sink = 0;
  for (size_t i = 0; i < dsv3_st_count(st); i++) {
    const dsv3_tensor *t = dsv3_st_tensor(st, i);
    const uint8_t *p = t->data;
    if (t->nbytes) sink ^= p[0] ^ p[t->nbytes - 1]; /* ASan catches any view outside the buffer */
    if (dsv3_st_find(st, t->name) != t) __builtin_trap();
  }
  for (size_t i = 0; i < dsv3_st_meta_count(st); i++) {
    const char *k, *v;
    dsv3_st_meta(st, i, &k, &v);
    sink ^= (uint8_t)strlen(k) ^ (uint8_t)strlen(v);
  }
  (void)sink;
  dsv3_st_close(st);
  return 0;
}

/* libFuzzer target: the JSON files every tool reads from a checkpoint directory, on arbitrary
 * bytes; the first byte (mod 3) picks the reader.
 *  - 0: config.json (dsv3_config_parse): accepted configs have positive, bounded dimensions
 *    and finite numbers, and every layer answers dsv3_config_layer_is_moe; a refusal is one line
 *    naming the file.
 *  - 1: dsv3-manifest.json (dsv3_manifest_load, the manifest `dsv3-inspect verify` trusts):
 *    loaded files have plain non-empty names and tensors at most 8 dimensions; a refusal is one
 *    line naming the file.
 *  - 2: model.safetensors.index.json beside the tiny model's three shards (FUZZ_TINY):
 *    dsv3_ckpt_open, then the tools' index verdict (dsv3_ckpt_require_index) and every tensor
 *    found by name; each refusal one line.
 * No crash, leak, overflow or UB (ASan + UBSan) whatever the bytes. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "config.h"
#include "manifest.h"
#include "util.h"

#define REQUIRE(c) do { if (!(c)) __builtin_trap(); } while (0)

static char path[64], ckdir[64], index_path[128];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  char dir[] = "/tmp/fuzz_jsonXXXXXX";
  REQUIRE(mkdtemp(dir) != NULL);
  snprintf(path, sizeof path, "%s/dsv3-manifest.json", dir);
  /* a checkpoint directory: the tiny model's shards and config.json (links), the index fuzzed */
  const char *tiny = getenv("FUZZ_TINY");
  if (!tiny) {
    fprintf(stderr, "fuzz_json: set FUZZ_TINY to models/dsv3-tiny\n");
    exit(1);
  }
  char d2[] = "/tmp/fuzz_ckptXXXXXX";
  REQUIRE(mkdtemp(d2) != NULL);
  snprintf(ckdir, sizeof ckdir, "%s", d2);
  snprintf(index_path, sizeof index_path, "%s/model.safetensors.index.json", ckdir);
  const char *names[] = {"config.json", "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                         "model-00003-of-00003.safetensors"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    char src[4096], dst[256];
    snprintf(src, sizeof src, "%s/%s", tiny, names[i]);
    snprintf(dst, sizeof dst, "%s/%s", ckdir, names[i]);
    char *real = realpath(src, NULL);
    REQUIRE(real != NULL && symlink(real, dst) == 0);
    free(real);
  }
  return 0;
}

static void one_line_naming(const char *label) {
  const char *e = dsv3_error();
  REQUIRE(strncmp(e, label, strlen(label)) == 0 && strchr(e, '\n') == NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  const char *text = (const char *)data + 1;
  const size_t n = size - 1;
  if (data[0] % 3 == 0) {
    dsv3_config c;
    if (dsv3_config_parse(text, n, "fuzz.json", &c) != 0) {
      one_line_naming("fuzz.json: ");
      return 0;
    }
    REQUIRE(c.hidden_size > 0 && c.num_hidden_layers > 0 && c.vocab_size > 0 && c.num_attention_heads > 0);
    REQUIRE(isfinite(c.rms_norm_eps) && isfinite(c.rope_theta) && isfinite(c.routed_scaling_factor) &&
            isfinite(c.rope_scaling.factor) && isfinite(c.rope_scaling.mscale));
    for (int64_t l = 0; l < dsv3_config_total_layers(&c) && l < 2000; l++) (void)dsv3_config_layer_is_moe(&c, l);
    return 0;
  }
  if (data[0] % 3 == 2) {
    FILE *f = fopen(index_path, "wb");
    REQUIRE(f != NULL && fwrite(text, 1, n, f) == n && fclose(f) == 0);
    dsv3_ckpt *ck = NULL;
    if (dsv3_ckpt_open(ckdir, &ck) != 0) {
      REQUIRE(ck == NULL && strchr(dsv3_error(), '\n') == NULL);
      return 0;
    }
    if (dsv3_ckpt_require_index(ck, ckdir, NULL, NULL) != 0) REQUIRE(strchr(dsv3_error(), '\n') == NULL);
    for (size_t i = 0; i < dsv3_ckpt_count(ck); i++) {
      size_t fi;
      const dsv3_tensor *t = dsv3_ckpt_tensor(ck, i, &fi);
      REQUIRE(t != NULL && fi < dsv3_ckpt_nfiles(ck));
      (void)dsv3_ckpt_find(ck, t->name, -1, NULL);
    }
    dsv3_ckpt_close(ck);
    return 0;
  }
  FILE *f = fopen(path, "wb");
  REQUIRE(f != NULL && fwrite(text, 1, n, f) == n && fclose(f) == 0);
  dsv3_manifest m;
  if (dsv3_manifest_load(path, &m) != 0) {
    one_line_naming(path);
    return 0;
  }
  for (int pass = 0; pass < 2; pass++) {
    const dsv3_manifest_file *fs = pass ? m.inputs : m.files;
    const size_t nf = pass ? m.ninputs : m.nfiles;
    for (size_t i = 0; i < nf; i++) {
      REQUIRE(fs[i].name && fs[i].name[0] && !strchr(fs[i].name, '/'));
      for (size_t k = 0; k < fs[i].ntensors; k++) REQUIRE(fs[i].t[k].name && fs[i].t[k].ndim <= 8);
    }
  }
  dsv3_manifest_free(&m);
  return 0;
}

/* tokenizer.h - Hugging Face `tokenizer.json` byte-level BPE in C (DeepSeek-V3's tokenizer).
 *
 * Encoding follows `tokenizers` step for step: added/special tokens are matched first and never
 * split (leftmost-longest, with their lstrip/rstrip/single_word/normalized flags); the rest is
 * normalized, goes through the pre-tokenizers (Split with Oniguruma regexes and every behaviour,
 * ByteLevel, ...), then BPE merges by rank.  Decoding maps byte-level symbols back to bytes;
 * special tokens are skipped when asked.  Input that is not valid UTF-8 is read as Python's
 * bytes.decode('utf-8', 'replace') would (U+FFFD).  What is supported: docs/tokenizer.md.
 * A loaded tokenizer is read-only: encode/decode may run in several threads at once. */
#ifndef DSV3_TOKENIZER_H
#define DSV3_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsv3_tokenizer dsv3_tokenizer;

/* Load tokenizer.json (and, when present beside it, tokenizer_config.json for bos/eos). */
int dsv3_tok_load(const char *tokenizer_json_path, dsv3_tokenizer **out);
void dsv3_tok_free(dsv3_tokenizer *t);

/* Encode `len` bytes of text (no BOS added).  *ids is malloc'd (also for 0 ids); returns the
 * count, or -1 (and *ids NULL) only if a regex search fails inside Oniguruma. */
int64_t dsv3_tok_encode(const dsv3_tokenizer *t, const char *text, size_t len, int32_t **ids);
/* Decode ids to malloc'd bytes (NUL-terminated); skip_special: drop special tokens.  Ids that
 * are not in the vocabulary are dropped.  The bytes are returned as they are: `tokenizers`
 * applies from_utf8_lossy on top, which changes nothing when they are valid UTF-8. */
char *dsv3_tok_decode(const dsv3_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                      size_t *out_len);
/* Bytes of one token (for streaming output; with the ByteLevel decoder, DeepSeek-V3's, their
 * concatenation is dsv3_tok_decode without skip_special; a tokenizer.json without a decoder
 * decodes to the tokens joined by spaces).  Writes at most cap bytes and returns how many it
 * wrote; 0 for a bad id. */
size_t dsv3_tok_token_bytes(const dsv3_tokenizer *t, int32_t id, char *buf, size_t cap);
int32_t dsv3_tok_id(const dsv3_tokenizer *t, const char *token); /* added first, then model; -1 */
int dsv3_tok_is_special(const dsv3_tokenizer *t, int32_t id);
int64_t dsv3_tok_vocab_size(const dsv3_tokenizer *t); /* highest id + 1 (model and added) */
/* bos_token / eos_token of tokenizer_config.json, else DeepSeek-V3's; -1 if not in the vocab */
int32_t dsv3_tok_bos(const dsv3_tokenizer *t); /* <｜begin▁of▁sentence｜> */
int32_t dsv3_tok_eos(const dsv3_tokenizer *t); /* <｜end▁of▁sentence｜> */

/* DeepSeek-V3 chat template: BOS, then per message: system text as is, "<｜User｜>"+text,
 * "<｜Assistant｜>"+text+EOS; with add_generation_prompt a final "<｜Assistant｜>".  The string
 * is then encoded like any text (so its ids are `tokenizers`' ids of the rendered template).
 * Returns the count, or -1 for a role other than system/user/assistant. */
typedef struct {
  const char *role; /* "system" | "user" | "assistant" */
  const char *content;
} dsv3_chat_msg;
int64_t dsv3_tok_chat(const dsv3_tokenizer *t, const dsv3_chat_msg *msgs, size_t n,
                      int add_generation_prompt, int32_t **ids);

#ifdef __cplusplus
}
#endif
#endif

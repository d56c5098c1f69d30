/* digest: SHA-256 (FIPS 180-4) of bytes, files and pipeline folders, as lower-case hex.
 *
 * An experiment records the digest of its model and prompt files so that resuming with a
 * different model or prompt set is refused (experiment.json "model_digest", "prompts_digest").
 */
#ifndef SS_DIGEST_H
#define SS_DIGEST_H

#include <stddef.h>
#include <stdint.h>

#define DIGEST_HEX 65 /* 64 hex characters + NUL */

typedef struct {
    uint32_t h[8];
    uint64_t len;      /* bytes hashed so far */
    uint8_t buf[64];
    size_t nbuf;
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t n);
/* Writes 64 hex characters and a NUL to hex. */
void sha256_final_hex(sha256_ctx *c, char hex[DIGEST_HEX]);

/* SHA-256 of n bytes in memory. */
void digest_bytes(const void *data, size_t n, char hex[DIGEST_HEX]);
/* SHA-256 of a file's bytes. */
int digest_file(const char *path, char hex[DIGEST_HEX]);

/* SHA-256 over every regular file in every subfolder of a pipeline folder, at any depth
 * (transformer/, text_encoder/, tokenizer/, scheduler/, any other component folder, nested
 * folders such as shards/), in byte order of their relative path, each contributing
 * "<relative path>\n<size>\n" and its bytes (the loader refuses shard names with a ".."
 * component, so every shard is among them). Names starting with '.' or ending in
 * ".tmp" are skipped; symbolic links are followed. Files directly in the folder are left out:
 * model_index.json only names the classes (checked to be fixed) and a version tag. For a folder
 * with only the four component folders and no nested ones this is the same digest as before
 * (sinkscope <= 2026-11). */
int digest_pipeline(const char *dir, char hex[DIGEST_HEX]);

#endif

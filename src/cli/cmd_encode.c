/* sinkscope encode: a CLIP or T5 text encoder (transformers folder) on input_ids. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/err.h"
#include "io/safetensors.h"
#include "text/txenc.h"
#include "text/txtok.h"

static const char USAGE[] =
    "usage: sinkscope encode --model DIR --inputs IN.safetensors --out OUT.safetensors [--tokenizer DIR]\n"
    "\n"
    "  --model DIR       transformers folder: config.json (clip_text_model or t5) + model.safetensors\n"
    "                    (or model.safetensors.index.json shards), F32/F16/BF16\n"
    "  --inputs FILE     input_ids [B,L] (I64 or I32) and optionally attention_mask [B,L]\n"
    "  --out FILE        CLIP: hidden_states.{i}, last_hidden_state, pooler_output, text_embeds,\n"
    "                    pool_index; T5: hidden_states.{i}, block.{i}, last_hidden_state (no mask)\n"
    "                    and, with a mask, hidden_states_masked.{i}, block_masked.{i},\n"
    "                    last_hidden_state_masked. CLIP applies a given mask with its causal mask.\n"
    "  --tokenizer DIR   check that this tokenizer's ids fit the model's vocabulary\n";

static int ints(const st_file *f, const char *path, const char *name, int required, int64_t **out, int *B, int *L) {
    *out = NULL;
    const st_tensor *t = st_find(f, name);
    if (!t) return required ? ss_fail(SS_EMISSING, "%s: input tensor '%s' is missing", path, name) : 0;
    if (t->ndim != 2 || t->shape[0] <= 0 || t->shape[1] <= 0 || t->shape[0] > (1 << 20) || t->shape[1] > (1 << 20))
        return ss_fail(SS_ESHAPE, "%s: '%s' must be [B, L]", path, name);
    if (*B && (t->shape[0] != *B || t->shape[1] != *L))
        return ss_fail(SS_ESHAPE, "%s: '%s' is [%lld, %lld], input_ids is [%d, %d]", path, name,
                       (long long)t->shape[0], (long long)t->shape[1], *B, *L);
    *B = (int)t->shape[0], *L = (int)t->shape[1];
    int64_t *v = ss_malloc((size_t)t->numel * sizeof *v);
    if (!v) return SS_ENOMEM;
    for (int64_t i = 0; i < t->numel; i++) {
        const unsigned char *p = (const unsigned char *)t->data;
        switch (t->dtype) {
        case ST_I64: memcpy(&v[i], p + 8 * i, 8); break;
        case ST_I32: { int32_t x; memcpy(&x, p + 4 * i, 4); v[i] = x; } break;
        case ST_BOOL: case ST_U8: v[i] = p[i]; break;
        default:
            free(v);
            return ss_fail(SS_EFORMAT, "%s: '%s' is %s, expected I64 or I32", path, name, st_dtype_name(t->dtype));
        }
    }
    *out = v;
    return 0;
}

static int add_out(void *ctx, const char *name, int is_f32, const void *data, int ndim, const int64_t *shape) {
    st_writer *w = ctx;
    return is_f32 ? st_writer_add_f32(w, name, ST_F32, ndim, shape, data) : st_writer_add(w, name, ST_I64, ndim, shape, data);
}

int cmd_encode(int argc, char **argv) {
    const char *model = NULL, *inputs = NULL, *outp = NULL, *tokdir = NULL;
    cli_opt opts[] = {{"model", &model, NULL}, {"inputs", &inputs, NULL}, {"out", &outp, NULL}, {"tokenizer", &tokdir, NULL}};
    int pr = cli_parse(argc, argv, opts, 4, USAGE);
    if (pr) return pr > 0 ? 0 : 2;
    if (!model || !inputs || !outp) {
        fprintf(stderr, "sinkscope encode: --model, --inputs and --out are required\n%s", USAGE);
        return 2;
    }
    txenc *e = NULL;
    txtok *t = NULL;
    st_file *f = NULL;
    st_writer *w = NULL;
    int64_t *ids = NULL, *mask = NULL;
    int B = 0, L = 0;
    int rc = txenc_open(&e, model);
    if (rc >= 0 && tokdir) {
        rc = txtok_open(&t, tokdir);
        if (rc >= 0) rc = txenc_check_tokenizer(e, t);
    }
    if (rc >= 0) rc = st_open(&f, inputs);
    if (rc >= 0) rc = ints(f, inputs, "input_ids", 1, &ids, &B, &L);
    if (rc >= 0) rc = ints(f, inputs, "attention_mask", 0, &mask, &B, &L);
    if (rc >= 0 && !(w = st_writer_new())) rc = ss_fail(SS_ENOMEM, "out of memory");
    if (rc >= 0) rc = txenc_run(e, ids, mask, B, L, inputs, add_out, w);
    if (rc >= 0) rc = st_writer_save(w, outp);
    if (rc < 0) fprintf(stderr, "sinkscope encode: %s\n", ss_err());
    st_writer_free(w);
    free(ids), free(mask);
    if (f) st_close(f);
    txtok_free(t);
    txenc_free(e);
    return rc < 0 ? 1 : 0;
}

/* Damaged copies of a model folder (damage.h). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "damage.h"
#include "io/safetensors.h"

/* dir/config.json = the fixture's config with `key` set to `val` (NULL: removed). */
void td_write_config(const char *dir, const char *src, const char *key, json_t *val) {
    json_error_t je;
    json_t *cfg = json_load_file(tc_join(src, "config.json"), 0, &je);
    assert_non_null(cfg);
    if (val) json_object_set_new(cfg, key, val);
    else json_object_del(cfg, key);
    assert_int_equal(json_dump_file(cfg, tc_join(dir, "config.json"), 0), 0);
    json_decref(cfg);
}

/* dir/diffusion_pytorch_model.safetensors = the fixture's weights, without `drop` and with
 * `reshape`'s first dimension one larger (data truncated/zero-padded accordingly). */
void td_write_weights(const char *dir, const char *src, const char *drop, const char *reshape) {
    st_set *st;
    assert_int_equal(st_set_open(&st, src), 0);
    st_writer *w = st_writer_new();
    for (int i = 0; i < st_set_count(st); i++) {
        const st_tensor *t = st_set_get(st, i);
        if (drop && !strcmp(t->name, drop)) continue;
        if (reshape && !strcmp(t->name, reshape)) {
            int64_t shape[ST_MAX_DIMS];
            memcpy(shape, t->shape, sizeof shape);
            shape[0]++;
            const size_t row = t->nbytes / (size_t)t->shape[0];
            char *buf = calloc(1, t->nbytes + row);
            memcpy(buf, t->data, t->nbytes);
            assert_int_equal(st_writer_add(w, t->name, t->dtype, t->ndim, shape, buf), 0);
            free(buf);
            continue;
        }
        assert_int_equal(st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data), 0);
    }
    assert_int_equal(st_writer_save(w, tc_join(dir, "diffusion_pytorch_model.safetensors")), 0);
    st_writer_free(w);
    st_set_close(st);
}


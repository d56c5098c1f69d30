/* pipeindex (pipeindex.h): model_index.json against a pipeline class's components. */
#include "sample/pipeindex.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "core/err.h"
#include "io/jsonfile.h"

static int is_null_component(json_t *v) {
    return json_is_null(v) ||
           (json_is_array(v) && json_array_size(v) == 2 && json_is_null(json_array_get(v, 0)) && json_is_null(json_array_get(v, 1)));
}

int pipe_index_read(const char *dir, const char *class_name, const pipe_component *comp, int n, int *present) {
    char path[PIPE_PATH_LEN];
    if ((size_t)snprintf(path, sizeof path, "%s/model_index.json", dir) >= sizeof path)
        return ss_fail(SS_EARG, "pipeline folder path too long: %s", dir);
    json_t *root;
    int rc = ss_json_load(path, &root);
    if (rc < 0) return rc;
    for (int i = 0; i < n; i++) present[i] = 0;
    if (!json_is_object(root)) {
        rc = ss_fail(SS_EFORMAT, "%s: expected a JSON object", path);
        goto done;
    }
    json_t *cls = json_object_get(root, "_class_name");
    if (!json_is_string(cls) || strcmp(json_string_value(cls), class_name)) {
        rc = ss_fail(SS_EFORMAT, "%s: field '_class_name' must be \"%s\"", path, class_name);
        goto done;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (key[0] == '_') continue;
        int i = 0;
        while (i < n && strcmp(key, comp[i].key)) i++;
        if (i == n) {
            rc = ss_fail(SS_EFORMAT, "%s: unknown component '%s' for %s", path, key, class_name);
            goto done;
        }
        if (is_null_component(v)) {
            if (!comp[i].nullable) {
                rc = ss_fail(SS_EMISSING, "%s: component '%s' is null, but %s needs it", path, key, class_name);
                goto done;
            }
            continue;
        }
        json_t *c = json_array_get(v, 1);
        if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_string(json_array_get(v, 0)) || !json_is_string(c)) {
            rc = ss_fail(SS_EFORMAT, "%s: component '%s' must be [library, class] or null", path, key);
            goto done;
        }
        const char *cn = json_string_value(c);
        int ok = 0;
        for (int k = 0; k < 2 && comp[i].cls[k]; k++) ok |= !strcmp(cn, comp[i].cls[k]);
        if (!ok) {
            if (comp[i].cls[0])
                rc = ss_fail(SS_EFORMAT, "%s: component '%s' has class '%s', which sinkscope does not support (%s%s%s)", path,
                             key, cn, comp[i].cls[0], comp[i].cls[1] ? " or " : "", comp[i].cls[1] ? comp[i].cls[1] : "");
            else
                rc = ss_fail(SS_EFORMAT, "%s: component '%s' (class '%s') is not supported; it must be null", path, key, cn);
            goto done;
        }
        present[i] = 1;
    }
    for (int i = 0; i < n; i++)
        if (!comp[i].nullable && !present[i]) {
            rc = ss_fail(SS_EMISSING, "%s: component '%s' is missing", path, comp[i].key);
            goto done;
        }
done:
    json_decref(root);
    return rc;
}

int pipe_subpath(char *buf, const char *dir, const char *key) {
    if ((size_t)snprintf(buf, PIPE_PATH_LEN, "%s/%s", dir, key) >= PIPE_PATH_LEN)
        return ss_fail(SS_EARG, "pipeline folder path too long: %s", dir);
    return 0;
}

int pipe_open_text(const char *dir, const char *tok_key, const char *enc_key, txtok **tok, txenc **enc) {
    char path[PIPE_PATH_LEN];
    int rc;
    if ((rc = pipe_subpath(path, dir, tok_key)) < 0) return rc;
    if ((rc = txtok_open(tok, path)) < 0) return ss_err_prefix(rc, "%s: component '%s': ", dir, tok_key);
    if ((rc = pipe_subpath(path, dir, enc_key)) < 0) return rc;
    if ((rc = txenc_open(enc, path)) < 0) return ss_err_prefix(rc, "%s: component '%s': ", dir, enc_key);
    if ((rc = txenc_check_tokenizer(*enc, *tok)) < 0) return ss_err_prefix(rc, "%s: component '%s': ", dir, tok_key);
    return 0;
}

int pipe_open_vae(const char *dir, vae_model **vae) {
    char path[PIPE_PATH_LEN];
    int rc;
    if ((rc = pipe_subpath(path, dir, "vae")) < 0) return rc;
    if ((rc = vae_load(vae, path)) < 0) return ss_err_prefix(rc, "%s: component 'vae': ", dir);
    return 0;
}

int pipe_open_flowmatch(const char *dir, fm_config *cfg) {
    char path[PIPE_PATH_LEN];
    int rc;
    if ((rc = pipe_subpath(path, dir, "scheduler/scheduler_config.json")) < 0) return rc;
    if ((rc = fm_config_load(cfg, path)) < 0) return ss_err_prefix(rc, "%s: component 'scheduler': ", dir);
    fm_sched probe;
    if ((rc = fm_init(&probe, cfg)) < 0) return ss_err_prefix(rc, "%s: component 'scheduler': ", dir);
    fm_free(&probe);
    return 0;
}

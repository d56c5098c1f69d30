/* Trainer loop: exact resume (bitwise), loss decreasing on the toy data, schedules, EMA, the
 * written model folder (loads with sd3_load / te_load and holds the EMA weights), data errors,
 * and the `sinkscope train` command line. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "io/safetensors.h"
#include "models/sd3.h"
#include "text/encoder.h"
#include "train/train.h"

static char g_dir[64];

static int setup(void **st) {
    snprintf(g_dir, sizeof g_dir, "/tmp/ss_trainloop_XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **st) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void tiny(tr_arch *a, tr_opts *o, int qk) {
    tr_arch_default(a);
    a->sd3.sample_size = 16, a->sd3.patch_size = 2, a->sd3.num_layers = 2;
    a->sd3.num_heads = 2, a->sd3.head_dim = 16, a->sd3.qk_norm = qk;
    a->te.max_length = 12, a->te.hidden_size = 16;
    tr_opts_default(o);
    o->batch = 4, o->steps = 6, o->warmup = 2, o->lr = 2e-3, o->min_lr = 1e-4, o->log_every = 0, o->save_every = 0;
    o->seed = 3, o->ema_decay = 0.9;
}

static void same_state(const tr_trainer *a, const tr_trainer *b) {
    const size_t n = sizeof(float) * a->m->n;
    assert_int_equal(a->step, b->step);
    assert_true(a->samples == b->samples);
    assert_memory_equal(a->m->param, b->m->param, n);
    assert_memory_equal(a->ema, b->ema, n);
    assert_memory_equal(a->adam_m, b->adam_m, n);
    assert_memory_equal(a->adam_v, b->adam_v, n);
    assert_true(a->loss_ema == b->loss_ema);
}

static void run_resume(int qk) {
    tr_arch a;
    tr_opts o;
    tiny(&a, &o, qk);
    tr_data d = tr_data_toy(16);
    tr_trainer *straight, *first, *second;
    assert_int_equal(tr_trainer_new(&straight, &a, &o, &d), 0);
    for (int i = 0; i < 6; i++) assert_int_equal(tr_trainer_step(straight), 0);
    assert_int_equal(tr_trainer_new(&first, &a, &o, &d), 0);
    for (int i = 0; i < 3; i++) assert_int_equal(tr_trainer_step(first), 0);
    char path[128];
    snprintf(path, sizeof path, "%s/ckpt.safetensors", g_dir);
    if (tr_trainer_save(first, path) < 0) fail_msg("%s", ss_err());
    tr_trainer_free(first);
    if (tr_trainer_resume(&second, path, NULL, &d) < 0) fail_msg("%s", ss_err());
    assert_int_equal(second->step, 3);
    for (int i = 0; i < 3; i++) assert_int_equal(tr_trainer_step(second), 0);
    same_state(straight, second); /* bit for bit */
    print_message("  resume (qk_norm %s): 6 steps straight == 3 + save + resume + 3, bitwise (%zu floats x 4 arenas)\n",
                  qk ? "rms" : "none", straight->m->n);
    /* a different data set is refused */
    tr_data other = d;
    other.name = "something-else";
    tr_trainer *bad;
    assert_true(tr_trainer_resume(&bad, path, NULL, &other) < 0);
    assert_non_null(strstr(ss_err(), "trained on data"));
    tr_trainer_free(straight);
    tr_trainer_free(second);
}

static void test_resume_bitwise(void **st) {
    run_resume(0);
    run_resume(1);
}

static void test_loss_decreases(void **st) {
    tr_arch a;
    tr_opts o;
    tiny(&a, &o, 0);
    o.batch = 8, o.steps = 120, o.warmup = 10, o.schedule = TR_SCHED_CONSTANT;
    tr_data d = tr_data_toy(16);
    tr_trainer *t;
    assert_int_equal(tr_trainer_new(&t, &a, &o, &d), 0);
    double first = 0, last = 0;
    for (int i = 0; i < 120; i++) {
        assert_int_equal(tr_trainer_step(t), 0);
        if (i < 10) first += t->last_loss / 10;
        if (i >= 110) last += t->last_loss / 10;
    }
    print_message("  smoke: toy squares 16x16, D 32, 2 layers, batch 8: mean loss steps 1-10 %.4f -> steps 111-120 %.4f\n",
                  first, last);
    assert_true(last < 0.6 * first);
    tr_trainer_free(t);
}

static void test_schedule_and_ema(void **st) {
    tr_opts o;
    tr_opts_default(&o);
    o.lr = 1e-3, o.min_lr = 1e-4, o.warmup = 10, o.steps = 110;
    assert_true(fabs(tr_lr_at(&o, 0) - 1e-4) < 1e-12);     /* (s+1)/warmup */
    assert_true(fabs(tr_lr_at(&o, 9) - 1e-3) < 1e-12);
    assert_true(fabs(tr_lr_at(&o, 10) - 1e-3) < 1e-12);    /* cosine starts at the peak */
    assert_true(fabs(tr_lr_at(&o, 60) - 5.5e-4) < 1e-12);  /* half way */
    assert_true(fabs(tr_lr_at(&o, 110) - 1e-4) < 1e-12);   /* ends at min_lr */
    o.schedule = TR_SCHED_CONSTANT;
    assert_true(fabs(tr_lr_at(&o, 60) - 1e-3) < 1e-12);
    /* EMA after the first step: decay min(0.9, 1/10) = 0.1 */
    tr_arch a;
    tiny(&a, &o, 0);
    tr_data d = tr_data_toy(16);
    tr_trainer *t;
    assert_int_equal(tr_trainer_new(&t, &a, &o, &d), 0);
    float *p0 = malloc(sizeof(float) * t->m->n);
    memcpy(p0, t->m->param, sizeof(float) * t->m->n);
    assert_int_equal(tr_trainer_step(t), 0);
    size_t moved = 0;
    for (size_t i = 0; i < t->m->n; i++) {
        const float want = 0.1f * p0[i] + 0.9f * t->m->param[i];
        assert_true(fabsf(t->ema[i] - want) <= 1e-6f * (1 + fabsf(want)));
        moved += p0[i] != t->m->param[i];
    }
    assert_true(moved > t->m->n / 2); /* Adam moves (almost) every parameter with a gradient */
    free(p0);
    tr_trainer_free(t);
}

static void test_run_writes_model(void **st) {
    tr_arch a;
    tr_opts o;
    tiny(&a, &o, 1);
    o.steps = 4, o.save_every = 2;
    tr_data d = tr_data_toy(16);
    tr_trainer *t;
    assert_int_equal(tr_trainer_new(&t, &a, &o, &d), 0);
    char out[128], path[256];
    snprintf(out, sizeof out, "%s/run", g_dir);
    if (tr_trainer_run(t, out) < 0) fail_msg("%s", ss_err());
    assert_int_equal(t->step, 4);
    snprintf(path, sizeof path, "%s/model/model_index.json", out);
    assert_int_equal(access(path, R_OK), 0);
    snprintf(path, sizeof path, "%s/model/scheduler/scheduler_config.json", out);
    assert_int_equal(access(path, R_OK), 0);
    snprintf(path, sizeof path, "%s/model.tmp", out);
    assert_int_not_equal(access(path, F_OK), 0); /* swapped in, nothing left over */
    snprintf(path, sizeof path, "%s/checkpoint.safetensors.tmp", out);
    assert_int_not_equal(access(path, F_OK), 0);
    { /* nothing but the checkpoint and the model: no writer's temporary file (".NAME.XXXXXX") */
        DIR *od = opendir(out);
        assert_non_null(od);
        struct dirent *e;
        while ((e = readdir(od)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, "checkpoint.safetensors") &&
                strcmp(e->d_name, "model"))
                fail_msg("%s: left behind: %s", out, e->d_name);
        closedir(od);
    }
    /* the transformer holds the EMA weights, and loads */
    snprintf(path, sizeof path, "%s/model/transformer", out);
    sd3_model *m;
    if (sd3_load(&m, path) < 0) fail_msg("%s", ss_err());
    assert_int_equal(m->cfg.qk_norm, 1);
    assert_int_equal(m->cfg.in_channels, 3);
    const int i = tr_model_find(t->m, "proj_out.weight");
    assert_true(i >= 0);
    assert_memory_equal(m->proj_out.w, t->ema + t->m->t[i].off, sizeof(float) * t->m->t[i].n);
    sd3_free(m);
    snprintf(path, sizeof path, "%s/model", out);
    te *e;
    if (te_load(&e, path) < 0) fail_msg("%s", ss_err());
    float ehs[12 * 16], pooled[16];
    assert_int_equal(te_encode(e, "a photo of a red square", ehs, pooled), 0);
    assert_true(fabsf(ehs[0] - (t->ema[t->m->tok_emb - t->m->param + 2 * 16] + t->ema[t->m->pos_emb - t->m->param])) < 1e-6f);
    te_free(e);
    tr_trainer_free(t);
}

static int failing_fn(void *ctx, uint64_t index, uint8_t *rgb, char *caption, size_t cap) {
    if (index == 5) return ss_fail(SS_EIO, "no sample 5 here");
    memset(rgb, 0, 16 * 16 * 3);
    snprintf(caption, cap, "%s", index == 2 ? "a photo of a unicorn" : "a photo");
    return 0;
}

static void test_data_errors(void **st) {
    tr_arch a;
    tr_opts o;
    tiny(&a, &o, 0);
    o.cfg_drop = 0;
    static const char *const words[] = {"a", "photo", "of", NULL};
    tr_data d = {.fn = failing_fn, .words = words, .width = 16, .height = 16, .name = "failing"};
    tr_trainer *t;
    assert_int_equal(tr_trainer_new(&t, &a, &o, &d), 0);
    assert_true(tr_trainer_step(t) < 0); /* sample 2: unknown word */
    assert_non_null(strstr(ss_err(), "sample 2"));
    t->samples = 4;
    assert_true(tr_trainer_step(t) < 0);
    assert_non_null(strstr(ss_err(), "no sample 5"));
    tr_trainer_free(t);
    d.width = 32;
    assert_true(tr_trainer_new(&t, &a, &o, &d) < 0);
}

static int sh(const char *cmd) {
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void test_cli(void **st) {
    const char *bin = getenv("SINKSCOPE_BIN") ? getenv("SINKSCOPE_BIN") : "./sinkscope";
    if (access(bin, X_OK)) skip();
    char cmd[1024], cfg[160];
    snprintf(cmd, sizeof cmd, "%s train --help | grep -q -- --head-dim", bin);
    assert_int_equal(sh(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s train --out %s/x --layers 0 2>/dev/null", bin, g_dir);
    assert_int_equal(sh(cmd), 2);
    snprintf(cfg, sizeof cfg, "%s/train.json", g_dir);
    FILE *f = fopen(cfg, "w");
    assert_non_null(f);
    fputs("{\"data\": \"toy\", \"image-size\": 16, \"layers\": 1, \"heads\": 2, \"head-dim\": 8, \"text-len\": 12,\n"
          " \"text-dim\": 8, \"batch\": 2, \"steps\": 3, \"lr\": 1e-3, \"qk-norm\": \"rms\", \"log-every\": 1}\n", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s train --config %s --out %s/cli 2>%s/log.txt", bin, cfg, g_dir, g_dir);
    assert_int_equal(sh(cmd), 0);
    snprintf(cmd, sizeof cmd, "grep -q 'step 3/3  loss' %s/log.txt && test -f %s/cli/model/transformer/config.json", g_dir, g_dir);
    assert_int_equal(sh(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s train --config %s --out %s/cli 2>/dev/null", bin, cfg, g_dir); /* exists */
    assert_int_equal(sh(cmd), 2);
    /* data, image size and architecture come from the checkpoint */
    snprintf(cmd, sizeof cmd, "%s train --out %s/cli --resume --steps 5 2>%s/log2.txt", bin, g_dir, g_dir);
    assert_int_equal(sh(cmd), 0);
    snprintf(cmd, sizeof cmd, "grep -q 'resumed .* at step 3 of 5' %s/log2.txt && grep -q 'step 5/5' %s/log2.txt", g_dir, g_dir);
    assert_int_equal(sh(cmd), 0);
}

int main(int argc, char **argv) {
    /* passive OpenMP waiting (read at load time, hence the re-exec): spinning threads stall
     * for whole time slices when other processes share the cores */
    if (!getenv("OMP_WAIT_POLICY") && !setenv("OMP_WAIT_POLICY", "passive", 1)) execv("/proc/self/exe", argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resume_bitwise),   cmocka_unit_test(test_loss_decreases),
        cmocka_unit_test(test_schedule_and_ema), cmocka_unit_test(test_run_writes_model),
        cmocka_unit_test(test_data_errors),      cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

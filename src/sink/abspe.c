#include "sink/abspe.h"

#include <stdio.h>
#include <string.h>

#include "core/err.h"

/* offsets from the origin of the 13 x 12 box of the paper's smiley (rows 10..22, cols 10..21 of 32 x 32) */
static const int SMILEY[SINK_PE_SMILEY_N][2] = {
    {0, 1},  {0, 2},  {1, 1},  {1, 2},  {0, 9},  {0, 10}, {1, 9},  {1, 10},                     /* eyes */
    {9, 0},  {10, 1}, {11, 2}, {12, 3}, {12, 4}, {12, 5}, {12, 6}, {12, 7}, {12, 8}, {11, 9}, /* mouth */
    {10, 10}, {9, 11},
};

int sink_pe_positions(int *out, int cap, const sink_pe_set *set, int h, int w, const sink_condition *c, const char *field,
                      const char *where) {
    const char *sep = where && *where ? ": " : "";
    if (!where) where = "";
    int n = 0;
    if (set->pattern == PE_CORNERS) {
        if (h < 2 || w < 2)
            return ss_fail(SS_EARG, "%s%scondition '%s': field '%s' = \"corners\" needs a patch grid of at least 2x2; the "
                           "model's grid is %dx%d", where, sep, c->name, field, h, w);
        const int pos[4] = {0, w - 1, (h - 1) * w, h * w - 1};
        for (int i = 0; i < 4 && n < cap; i++) out[n++] = pos[i];
        return n;
    }
    if (set->pattern == PE_SMILEY) {
        if (h < 13 || w < 12)
            return ss_fail(SS_EARG, "%s%scondition '%s': field '%s' = \"smiley\" needs a patch grid of at least 13x12 "
                           "(rows x cols); the model's grid is %dx%d", where, sep, c->name, field, h, w);
        const int r0 = (h - 12) / 2, c0 = (w - 12) / 2;
        for (int i = 0; i < SINK_PE_SMILEY_N && n < cap; i++) out[n++] = (r0 + SMILEY[i][0]) * w + c0 + SMILEY[i][1];
        return n;
    }
    for (int i = 0; i < set->n && n < cap; i++) {
        const int r = set->rc[i][0] < 0 ? set->rc[i][0] + h : set->rc[i][0];
        const int q = set->rc[i][1] < 0 ? set->rc[i][1] + w : set->rc[i][1];
        char at[24] = "";
        if (strcmp(field, "pe_copy_from")) snprintf(at, sizeof at, "[%d]", i); /* a list entry */
        if (r < 0 || r >= h || q < 0 || q >= w)
            return ss_fail(SS_EARG, "%s%scondition '%s': field '%s'%s = [%d, %d] is outside the model's %dx%d patch grid "
                           "(rows 0..%d, cols 0..%d, or -%d..-1 and -%d..-1 from the end)", where, sep, c->name, field, at,
                           set->rc[i][0], set->rc[i][1], h, w, h - 1, w - 1, h, w);
        for (int j = 0; j < n; j++)
            if (out[j] == r * w + q)
                return ss_fail(SS_EARG, "%s%scondition '%s': field '%s' names grid position [%d, %d] twice (entries %d and %d) "
                               "on the model's %dx%d grid", where, sep, c->name, field, r, q, j, i, h, w);
        out[n++] = r * w + q;
    }
    return n;
}

int sink_condition_check_pe(const sink_condition *c, int h, int w, const char *family, const char *where) {
    if (!c->have_pe) return 0;
    const char *sep = where && *where ? ": " : "";
    if (!where) where = "";
    if (h <= 0 || w <= 0)
        return ss_fail(SS_EARG, "%s%scondition '%s': fields 'pe_zero'/'pe_copy_from'/'pe_copy_to' edit an absolute position "
                       "embedding, but %s has none (it uses RoPE)", where, sep, c->name, family ? family : "this model");
    int pos[COND_MAX_PE], rc;
    if (c->have_pe_zero && (rc = sink_pe_positions(pos, COND_MAX_PE, &c->pe_zero, h, w, c, "pe_zero", where)) < 0) return rc;
    if (c->have_pe_copy) {
        sink_pe_set from = {.pattern = PE_LIST, .n = 1, .rc = {{c->pe_copy_from[0], c->pe_copy_from[1]}}};
        if ((rc = sink_pe_positions(pos, 1, &from, h, w, c, "pe_copy_from", where)) < 0 ||
            (rc = sink_pe_positions(pos, COND_MAX_PE, &c->pe_copy_to, h, w, c, "pe_copy_to", where)) < 0)
            return rc;
    }
    return 0;
}

int sink_pe_apply(const sink_condition *c, float *tab, int h, int w, int D) {
    if (!c->have_pe) return 0;
    int rc = sink_condition_check_pe(c, h, w, NULL, NULL);
    if (rc < 0) return rc;
    int pos[COND_MAX_PE], n;
    if (c->have_pe_copy) {
        sink_pe_set from = {.pattern = PE_LIST, .n = 1, .rc = {{c->pe_copy_from[0], c->pe_copy_from[1]}}};
        int src = 0;
        sink_pe_positions(&src, 1, &from, h, w, c, "pe_copy_from", NULL);
        n = sink_pe_positions(pos, COND_MAX_PE, &c->pe_copy_to, h, w, c, "pe_copy_to", NULL);
        for (int i = 0; i < n; i++) /* memmove: the source may be among the targets */
            memmove(tab + (size_t)pos[i] * D, tab + (size_t)src * D, sizeof(float) * (size_t)D);
    }
    if (c->have_pe_zero) {
        n = sink_pe_positions(pos, COND_MAX_PE, &c->pe_zero, h, w, c, "pe_zero", NULL);
        for (int i = 0; i < n; i++) memset(tab + (size_t)pos[i] * D, 0, sizeof(float) * (size_t)D);
    }
    return 0;
}

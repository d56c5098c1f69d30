/* abspe: the AbsPE manipulation of a condition (fields pe_zero, pe_copy_from, pe_copy_to;
 * sink/condition.h, docs/abspe.md), for families with an absolute position embedding added to
 * the patch embeddings (PixArt's sin-cos table of the actual grid, SD3's cropped table).
 *
 *   if (sink_condition_check_pe(&cond, grid_h, grid_w, "PixArtTransformer2DModel", path) < 0) die(ss_err());
 *   sink_pe_apply(&cond, table, grid_h, grid_w, D);   // table [h*w, D], row-major grid, before it is added
 *
 * The edit: first every position of pe_copy_to gets a copy of pe_copy_from's original row, then
 * every position of pe_zero is zeroed (a position in both ends zero). Empty lists change nothing
 * (bit-identical). Patterns on an h x w grid (rows r, columns c, 0-based):
 *   corners: (0, 0), (0, w-1), (h-1, 0), (h-1, w-1); needs h, w >= 2.
 *   smiley:  the 20 positions of the paper's Figure 9b (a 32 x 32 grid): eyes (10..11, 11..12) and
 *            (10..11, 19..20); mouth (19, 10), (20, 11), (21, 12), (22, 13..18), (21, 19), (20, 20),
 *            (19, 21). On any grid: those offsets from the 32 x 32 box origin (10, 10), placed at
 *            origin ((h-12)/2, (w-12)/2) (integer division); needs h >= 13, w >= 12.
 */
#ifndef SS_ABSPE_H
#define SS_ABSPE_H

#include "sink/condition.h"

#define SINK_PE_SMILEY_N 20

/* The positions (flat r*w + c, in the set's order) of a set on an h x w grid, at most cap.
 * Returns the count, or an error naming `where`, the condition and `field` (a position outside
 * the grid, a grid too small for the pattern, two entries naming the same position). */
int sink_pe_positions(int *out, int cap, const sink_pe_set *set, int h, int w, const sink_condition *c, const char *field,
                      const char *where);
/* Checks a condition's pe_* fields against a model's grid. family: the model's class name (for
 * the message); h = w = 0: the family has no absolute position embedding (RoPE), which is an
 * error when the condition has pe_* fields. Nothing to check: 0. */
int sink_condition_check_pe(const sink_condition *c, int h, int w, const char *family, const char *where);
/* Applies the edit to tab [h*w, D] in place (checks as sink_condition_check_pe, where = NULL). */
int sink_pe_apply(const sink_condition *c, float *tab, int h, int w, int D);

#endif

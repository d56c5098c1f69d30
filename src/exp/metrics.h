/* metrics: what `sinkscope run` measures per image.
 *
 * Pixel metrics between an image and its paired baseline (same prompt, same seed), both
 * W x H RGB uint8, values scaled to [0, 1]:
 *   mse  = mean over all pixels and channels of (a - b)^2
 *   psnr = 10 log10(1 / mse) dB  (+inf when mse = 0; JSON has no infinity, so records store null)
 *   ssim = mean over R, G, B of the mean SSIM map (Wang et al. 2004): Gaussian window 11 x 11,
 *          sigma 1.5, weights normalized to sum 1, only window positions fully inside the image
 *          ("valid", as the reference MATLAB code), data range L = 1, C1 = (0.01 L)^2,
 *          C2 = (0.03 L)^2, population (weighted) variances. Images smaller than 11 px on a side
 *          use the largest odd window that fits (same sigma), so tiny test models work too.
 *
 * Alignment: the ShapeWorld detector (sw_detect) and GenEval's rule (gv_score) give 1 (correct)
 * or 0 (wrong) for a prompt with GenEval metadata.
 *
 * Probe and verification: the sink context's records of one image, reduced to the conditional
 * batch element (the last one: with CFG the batch is [uncond, cond]), as the JSON arrays of
 * docs/experiment-format.md.
 */
#ifndef SS_METRICS_H
#define SS_METRICS_H

#include <stdint.h>

#include "eval/geneval.h"
#include "models/site.h"
#include "sink/sink.h"

double img_mse(const uint8_t *a, const uint8_t *b, int w, int h);
double img_psnr(double mse); /* +inf for mse == 0 */
/* Returns the SSIM, or NAN when the image is empty or allocation fails (ss_err set). */
double img_ssim(const uint8_t *a, const uint8_t *b, int w, int h);
/* Side of the SSIM window used for a w x h image (11, or the largest odd side that fits). */
int img_ssim_window(int w, int h);

/* Detector + GenEval rule: 1 correct, 0 wrong, negative on error. reason (optional) gets
 * GenEval's reasons ("" when correct). */
int metric_geneval(const gv_meta *m, const uint8_t *rgb, int w, int h, char *reason, size_t reason_cap);

/* The record's "spiral" array (docs/experiment-format.md, section Spiral fields): one entry per
 * probed record that has spiral fields, for batch element B - 1, in record order:
 *   {"site": "joint.3", "block": 3, "step": s, "t_frac": f, ...spiral_rec_to_json(rec, B - 1)...}
 * Records of step last_step also get "mu" (the record's Key Importance vector, [Tk]) and
 * "key_types": runs [type name, count] covering the Tk keys in order. Key types: the site's key
 * spans (from `sites`, the model's sites at the run's token counts); its one text span, when
 * text_types is given, takes text_types[0..S) (that batch element's ss_tok types, in the text
 * encoder's order), as the probe saw them (sink_ctx_set_text_types). NULL with ss_err set when
 * a last-step record has no mu vector (the probe did not keep it) or its site is not in `sites`. */
void *metric_spiral_json(const sink_ctx *s, int last_step, const ss_site *sites, int n_sites, const uint8_t *text_types,
                         int S);


#endif

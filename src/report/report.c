/* report: entry points (report_run with options, report_main for the runner's hook). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "io/fsutil.h"
#include "io/pathcheck.h"
#include "exp/report_hook.h"
#include "report/report.h"
#include "report/spiral.h"

const char *const RP_OUTPUT_FILES[] = {"summary.json",   "report.html",         "conditions.csv", "dd.csv",
                                       "dose_response.csv", "dose_trend.csv",   "tags.csv",       "dynamics.csv",
                                       "dynamics_blocks.csv", "locality.csv",  "verification.csv",
                                       "spiral_steps.csv", "spiral_depth.csv", "spiral_budget.csv", "spiral_keys.csv",
                                       "spiral_top.csv", NULL};

/* No output may be one of the report's inputs (through a symlink or hard link, or --out naming
 * the experiment's own files). */
static int check_outputs(const char *exp, const char *out) {
    char ej[4300], rj[4300], img[4300], path[4400];
    snprintf(ej, sizeof ej, "%s/experiment.json", exp);
    snprintf(rj, sizeof rj, "%s/records.jsonl", exp);
    snprintf(img, sizeof img, "%s/images", exp);
    const pc_file in[] = {{"EXP/experiment.json", ej}, {"EXP/records.jsonl", rj}};
    for (int i = 0; RP_OUTPUT_FILES[i]; i++) {
        snprintf(path, sizeof path, "%s/%s", out, RP_OUTPUT_FILES[i]);
        int rc = pc_check_output("--out", path, in, 2);
        if (!rc) rc = pc_check_output_tree("--out", path, "EXP/images", img, NULL);
        if (rc) return rc;
    }
    return 0;
}

void report_opts_default(report_opts *o) {
    memset(o, 0, sizeof *o);
    o->margin = 0.05;
    o->margin_clip_t = RP_MARGIN_CLIP_T;
    o->bootstrap = 1000;
    o->fid_bootstrap = RP_FID_BOOTSTRAP;
    o->seed = 0;
}

int report_run(const report_opts *o) {
    if (!o->exp_dir) return ss_fail(SS_EARG, "report: no experiment folder given");
    if (!(o->margin > 0 && o->margin < 1)) return ss_fail(SS_EARG, "report: margin %g must be in (0, 1)", o->margin);
    if (o->bootstrap < 1) return ss_fail(SS_EARG, "report: bootstrap resamples must be >= 1");
    if (o->fid_bootstrap < 0) return ss_fail(SS_EARG, "report: FID bootstrap resamples must be >= 0");
    char out[4200];
    if (o->out_dir) snprintf(out, sizeof out, "%s", o->out_dir);
    else if ((size_t)snprintf(out, sizeof out, "%s/report", o->exp_dir) >= sizeof out)
        return ss_fail(SS_EARG, "report: path too long");
    rp_exp e;
    int rc = check_outputs(o->exp_dir, out);
    if (rc < 0) return rc;
    rc = rp_load(&e, o->exp_dir, stderr);
    if (rc < 0) return rc;
    rp_analysis a;
    if ((rc = rp_analyze(&a, &e, o)) < 0) {
        rp_exp_free(&e);
        return rc;
    }
    if ((rc = rp_spiral_analyze(&a)) < 0) {
        rp_spiral_free(&a);
        rp_analysis_free(&a);
        rp_exp_free(&e);
        return rc;
    }
    rc = ss_mkdir_p(out);
    /* Concurrent reports of one folder: every file is replaced atomically through its own
     * unique temporary file (ss_write_atomic), so each file is always complete; the lock on
     * OUT/.lock also makes the set of files come from one report (the last one to take it),
     * not a mix of two snapshots of a growing records.jsonl. It is a separate file from the
     * runner's EXP/.lock, which `run` holds while it calls the report. */
    int lock = -1;
    if (rc == 0) {
        char lp[4300];
        snprintf(lp, sizeof lp, "%s/.lock", out);
        lock = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (lock < 0) rc = ss_fail(SS_EIO, "%s: cannot open the report lock: %s", lp, strerror(errno));
        else
            while (flock(lock, LOCK_EX) != 0)
                if (errno != EINTR) {
                    rc = ss_fail(SS_EIO, "%s: cannot lock: %s", lp, strerror(errno));
                    break;
                }
    }
    if (rc == 0) rc = rp_write_csvs(&a, out);
    if (rc == 0) rc = rp_write_summary(&a, out);
    if (rc == 0) rc = rp_write_html(&a, out);
    if (lock >= 0) close(lock); /* releases the lock */
    if (rc == 0 && o->print_table) {
        FILE *f = o->log ? o->log : stdout;
        rp_print_tables(&a, f);
        fprintf(f, "\nwrote %s/report.html, summary.json and CSV files\n", out);
    }
    rp_spiral_free(&a);
    rp_analysis_free(&a);
    rp_exp_free(&e);
    return rc;
}

int report_main(const char *exp_dir, int print_table) {
    report_opts o;
    report_opts_default(&o);
    o.exp_dir = exp_dir;
    o.print_table = print_table;
    return report_run(&o);
}

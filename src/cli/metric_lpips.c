/* sinkscope metric lpips: LPIPS (alex, v0.1) of PNG pairs, one JSON object per line. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/metric.h"
#include "core/err.h"
#include "io/png.h"
#include "metric/lpips.h"

static const char LPIPS_USAGE[] =
    "usage: sinkscope metric lpips --net ALEXNET.pth --lin ALEX.pth --pairs PAIRS.txt\n"
    "\n"
    "  LPIPS (lpips.LPIPS(net=\"alex\", version=\"0.1\"), normalize=False) of 8-bit RGB PNG pairs at\n"
    "  full resolution, mapped x/127.5 - 1 as lpips.im2tensor does.\n"
    "  --net ALEXNET.pth  torchvision's AlexNet state dict (features.* used), either .pth format\n"
    "  --lin ALEX.pth     lpips' weights/v0.1/alex.pth (lin0..lin4 heads), either .pth format\n"
    "  --pairs FILE       one 'a.png b.png' pair per line (paths relative to the current folder,\n"
    "                     separated by blanks; blank lines are skipped)\n"
    "  prints {\"a\": ..., \"b\": ..., \"lpips\": x} per pair\n";

int metric_lpips(int argc, char **argv) {
    const char *net_p = NULL, *lin_p = NULL, *pairs_p = NULL;
    cli_opt opts[] = {{"net", &net_p, NULL}, {"lin", &lin_p, NULL}, {"pairs", &pairs_p, NULL}};
    int pr = cli_parse(argc, argv, opts, 3, LPIPS_USAGE);
    if (pr) return pr > 0 ? 0 : 2;
    if (!net_p || !lin_p || !pairs_p) {
        fprintf(stderr, "sinkscope metric lpips: --net, --lin and --pairs are required\n%s", LPIPS_USAGE);
        return 2;
    }
    FILE *in = fopen(pairs_p, "rb");
    if (!in) {
        fprintf(stderr, "sinkscope metric lpips: %s: cannot open\n", pairs_p);
        return 1;
    }
    lpips_net *net;
    if (lpips_load(&net, net_p, lin_p) < 0) {
        fprintf(stderr, "sinkscope metric lpips: %s\n", ss_err());
        fclose(in);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0;
    int rc = 0;
    while (getline(&line, &cap, in) >= 0) {
        lineno++;
        char *save = NULL, *a = strtok_r(line, " \t\r\n", &save);
        if (!a) continue;
        char *b = strtok_r(NULL, " \t\r\n", &save), *extra = b ? strtok_r(NULL, " \t\r\n", &save) : NULL;
        if (!b || extra) {
            fprintf(stderr, "sinkscope metric lpips: %s: line %ld: expected two paths 'a.png b.png'\n", pairs_p, lineno);
            rc = 1;
            break;
        }
        int wa, ha, wb, hb;
        uint8_t *ia = NULL, *ib = NULL;
        double d = 0;
        if (png_read_rgb(a, &wa, &ha, &ia) < 0 || png_read_rgb(b, &wb, &hb, &ib) < 0) {
            rc = 1;
        } else if (wa != wb || ha != hb) {
            ss_fail(SS_ESHAPE, "%s is %dx%d but %s is %dx%d", a, wa, ha, b, wb, hb);
            rc = 1;
        } else if (lpips_distance_rgb(net, ia, ib, wa, ha, &d, NULL) < 0) {
            ss_err_prefix(SS_ESHAPE, "%s, %s: ", a, b);
            rc = 1;
        }
        free(ia);
        free(ib);
        if (rc) {
            fprintf(stderr, "sinkscope metric lpips: %s: line %ld: %s\n", pairs_p, lineno, ss_err());
            break;
        }
        json_t *o = json_pack("{s:s, s:s, s:f}", "a", a, "b", b, "lpips", d);
        char *s = o ? json_dumps(o, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17)) : NULL;
        if (!s) {
            fprintf(stderr, "sinkscope metric lpips: out of memory\n");
            json_decref(o);
            rc = 1;
            break;
        }
        puts(s);
        free(s);
        json_decref(o);
    }
    if (!rc && ferror(in)) {
        fprintf(stderr, "sinkscope metric lpips: %s: read error\n", pairs_p);
        rc = 1;
    }
    if (fflush(stdout) != 0) rc = 1;
    free(line);
    fclose(in);
    lpips_free(net);
    return rc;
}

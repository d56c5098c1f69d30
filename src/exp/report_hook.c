#include "exp/report_hook.h"

#include <stdio.h>

/* Weak: replaced by the report command's definition when it is linked in (see the header). */
__attribute__((weak)) int report_main(const char *exp_dir, int print_table) {
    (void)print_table;
    fprintf(stderr, "sinkscope run: report not available (records are in %s/records.jsonl)\n", exp_dir);
    return 0;
}

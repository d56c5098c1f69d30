/* report_hook: how `sinkscope run` (with no arguments) hands over to the report
 * (src/report/report.c). Returns 0 on success, or a negative code with ss_err() set;
 * print_table also prints the key table on stdout. */
#ifndef SS_REPORT_HOOK_H
#define SS_REPORT_HOOK_H

int report_main(const char *exp_dir, int print_table);

#endif

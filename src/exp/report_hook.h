/* report_hook: how `sinkscope run` (with no arguments) hands over to `sinkscope report`.
 *
 * report_main summarizes the experiment folder exp_dir (print_table: also print the summary
 * table on stdout) and returns 0 on success. report_hook.c holds a weak default that only says
 * "report not available". The report command overrides it with an ordinary (strong) definition;
 * put that definition in src/cli/cmd_report.c, or in a library file that cmd_report.c also calls
 * into, so that the linker pulls it in from libsinkscope.a.
 */
#ifndef SS_REPORT_HOOK_H
#define SS_REPORT_HOOK_H

int report_main(const char *exp_dir, int print_table);

#endif

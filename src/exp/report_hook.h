#ifndef SS_REPORT_HOOK_H
#define SS_REPORT_HOOK_H
int report_main(const char *exp_dir, int print_table);
#endif

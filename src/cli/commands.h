/* One function per sub-command; argv[0] is the sub-command name. Return the process exit code. */
#ifndef SS_COMMANDS_H
#define SS_COMMANDS_H
int cmd_forward(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_encode(int argc, char **argv);
int cmd_metric(int argc, char **argv);
int cmd_vae(int argc, char **argv);
#endif

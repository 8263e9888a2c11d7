/*
 * The CLI's help and its usage errors: `vmigrate COMMAND --help`, and the
 * one way every command says what was wrong with its arguments (the option
 * and the value, the choices where there are fixed ones).
 *
 * The help texts are also what the bash completion reads (tools/completion):
 * a usage line per form, "usage: vmigrate COMMAND ARGS" with placeholders in
 * capitals and literal subcommands in lower case, and one option a line,
 * "  --option ARG", where an ARG of the form a|b|c lists the choices.
 */
#ifndef CLI_HELP_H
#define CLI_HELP_H

#include <stdbool.h>

/* The whole help of cmd, or NULL when there is no such command. */
const char *cli_help(const char *cmd);
/* cmd's line in `vmigrate --help` ("" when it has none) */
const char *cli_summary(const char *cmd);
/* true when an argument before any "--" is -h or --help */
bool cli_asks_help(int argc, char **argv);

/* The following print to stderr (and with --json the envelope, code
 * bad-argument, on stdout) and return EXIT_USAGE. */
/* cmd's usage lines and where its whole help is */
int cli_usage(const char *cmd);
/* "vmigrate CMD: WHY", then the usage lines */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "vmigrate CMD: bad value 'VALUE' for OPT (CHOICES)"; choices may be NULL */
int cli_bad_value(const char *cmd, const char *opt, const char *value, const char *choices);
/* After getopt_long (its optstring starting with ':') returned '?' or ':':
 * the unknown option, or the one that lacks its value. */
int cli_getopt_error(const char *cmd, int c, char **argv);
/* For a command that parses its own arguments: an unknown option, or one
 * given last without its value. */
int cli_unknown_option(const char *cmd, const char *arg);
int cli_missing_value(const char *cmd, const char *opt);

#endif

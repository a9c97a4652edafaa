/*
 * fio07_args.h -- the option parsing that fio07_server.c and fio07_client.c
 * share: "-l LEVEL" (FIO_LOG_LEVEL) and each program's own "-x VALUE"
 * options, every one taking one value; the usage line.
 */
#ifndef FIO07_ARGS_H
#define FIO07_ARGS_H
#include <fio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  const char *name;  /* e.g. "--trust" */
  const char **slot; /* receives the value */
} fio07_option_s;

/* Parses the options that precede the first other argument into their slots
 * (options: a table ended by {NULL, NULL}). Returns the index of the first
 * argument that is not an option, or -1 for an unknown option. */
static inline int fio07_parse(int argc, char **argv,
                              const fio07_option_s *options) {
  int i = 1;
  for (; i + 1 < argc && argv[i][0] == '-'; i += 2) {
    if (!strcmp(argv[i], "-l")) {
      FIO_LOG_LEVEL = atoi(argv[i + 1]);
      continue;
    }
    const fio07_option_s *o = options;
    while (o->name && strcmp(o->name, argv[i]))
      ++o;
    if (!o->name)
      return -1;
    *o->slot = argv[i + 1];
  }
  return i;
}

/* The usage line on stderr; returns the exit status of a usage error. */
static inline int fio07_usage(const char *prog, const char *args) {
  fprintf(stderr, "usage: %s %s\n", prog, args);
  return 2;
}
#endif

/* resume.c - dsv3-convert's interrupted runs: SIGINT/SIGTERM/SIGHUP/SIGXFSZ remove this run's
 * own temps (".NAME.tmp.PID") before dying of the signal.  What --resume trusts, and removing
 * the temps of runs killed with SIGKILL, is format/runstate.c (shared with dsv3-cast). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "convert.h"
#include "util.h"

/* This run's temp names, fixed before the handler is installed (unlink is async-signal-safe). */
static char **g_temps;
static size_t g_ntemps;

static void on_signal(int sig) {
  for (size_t i = 0; i < g_ntemps; i++) unlink(g_temps[i]);
  signal(sig, SIG_DFL);
  raise(sig);
}

void dsv3_convert_remove_temps_on_signal(const char *out_dir, char **final_names, size_t n) {
  g_temps = dsv3_xcalloc(n ? n : 1, sizeof *g_temps);
  for (size_t i = 0; i < n; i++) {
    size_t l = strlen(out_dir) + strlen(final_names[i]) + 32;
    g_temps[i] = dsv3_xmalloc(l);
    snprintf(g_temps[i], l, "%s/.%s.tmp.%ld", out_dir, final_names[i], (long)getpid());
  }
  g_ntemps = n;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  sigaction(SIGXFSZ, &sa, NULL); /* a file-size limit: die as the default would, without the temp */
}

void dsv3_convert_temps_free(void) {
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  signal(SIGHUP, SIG_DFL);
  signal(SIGXFSZ, SIG_DFL);
  for (size_t i = 0; i < g_ntemps; i++) free(g_temps[i]);
  free(g_temps);
  g_temps = NULL;
  g_ntemps = 0;
}

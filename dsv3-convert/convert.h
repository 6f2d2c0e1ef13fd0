/* convert.h - dsv3-convert's modules (resume.c: removing this run's temps when interrupted; the
 * --resume state itself is format/runstate.c). */
#ifndef DSV3_CONVERT_H
#define DSV3_CONVERT_H

#include <stddef.h>

struct dsv3_ckpt;
/* On SIGINT/SIGTERM/SIGHUP/SIGXFSZ, unlink this process's temps of OUT_DIR/NAME (dsv3_outfile naming)
 * for the n names, then die of the signal.  dsv3_convert_temps_free restores the defaults. */
void dsv3_convert_remove_temps_on_signal(const char *out_dir, char **final_names, size_t n);
void dsv3_convert_temps_free(void);

#endif

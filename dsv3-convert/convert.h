/* convert.h - dsv3-convert's modules (resume.c: --resume state, interrupted runs). */
#ifndef DSV3_CONVERT_H
#define DSV3_CONVERT_H

#include <stddef.h>

struct dsv3_ckpt;
/* The text that identifies a conversion: options that change the output, and every input
 * file by path, size, mtime and inode. */
char *dsv3_convert_state_text(const struct dsv3_ckpt *in, const char *options);
/* 1 if OUT holds the state of an interrupted run with exactly this text. */
int dsv3_convert_state_matches(const char *out_dir, const char *text);
int dsv3_convert_state_write(const char *out_dir, const char *text);
void dsv3_convert_state_remove(const char *out_dir);
/* Remove ".NAME.tmp.PID" files of processes that are gone; returns how many. */
int dsv3_convert_clean_stale_temps(const char *out_dir);
/* On SIGINT/SIGTERM/SIGHUP/SIGXFSZ, unlink this process's temps of OUT_DIR/NAME (dsv3_outfile naming)
 * for the n names, then die of the signal.  dsv3_convert_temps_free restores the defaults. */
void dsv3_convert_remove_temps_on_signal(const char *out_dir, char **final_names, size_t n);
void dsv3_convert_temps_free(void);

#endif

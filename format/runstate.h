/* runstate.h - what --resume trusts, shared by dsv3-cast and dsv3-convert.
 *
 * A run writes OUT/.TOOL.state before its first output file and removes it when everything is
 * written.  The state names the options that change the output bytes and every input file by
 * path, size, modification time and inode.  --resume skips an output file only when the state
 * file is there and equal to this run's (OUT is what an interrupted run of this very command
 * left, on unchanged inputs) and the file has exactly the planned size and header
 * (dsv3_plan_output_complete).  Outputs appear under their final names only by rename after a
 * complete write, so the two together mean complete and from these inputs. */
#ifndef DSV3_RUNSTATE_H
#define DSV3_RUNSTATE_H

struct dsv3_ckpt;

/* "TOOL resume state 1", the options, then each checkpoint (tag: "input", "scales-from", ...;
 * `extra` may be NULL) by its files.  malloc'd. */
char *dsv3_runstate_text(const char *tool, const char *options, const struct dsv3_ckpt *in,
                         const char *extra_tag, const struct dsv3_ckpt *extra);
/* OUT_DIR/.TOOL.state: 1 if present with exactly this text. */
int dsv3_runstate_matches(const char *out_dir, const char *tool, const char *text);
int dsv3_runstate_write(const char *out_dir, const char *tool, const char *text);
void dsv3_runstate_remove(const char *out_dir, const char *tool);
/* Remove ".NAME.tmp.PID" files (dsv3_outfile temps) whose process is gone: what a killed run
 * leaves; a live PID's temp is left alone.  Returns how many were removed. */
int dsv3_clean_stale_temps(const char *out_dir);

#endif

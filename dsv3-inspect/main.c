/* dsv3-inspect - look inside a DeepSeek-V3 checkpoint: summary, tensors, statistics, a
 * structure check against config.json, and diffs.  A thin CLI over libdsv3; each mode lives
 * in its own module (summary.c, tensors.c, stats.c, check.c, diff.c).
 *
 * Modes are flags (--tensors) or, equivalently, subcommands (`dsv3-inspect tensors CKPT`);
 * further subcommands (e.g. `verify`, issue 5) are modules that define dsv3i_cmd_NAME. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "inspect.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: dsv3-inspect [MODE] [OPTIONS] CKPT\n"
          "       dsv3-inspect verify [--sha256 LIST] [--json] CKPT   (see dsv3-inspect verify --help)\n"
          "       dsv3-inspect SUBCOMMAND [OPTIONS] CKPT...\n"
          "Inspect a DeepSeek-V3 checkpoint: a directory in the Hugging Face layout\n"
          "(model.safetensors.index.json + shards), the runtime layout (model{r}-mp{n}.safetensors),\n"
          "a directory of .safetensors files, or a single .safetensors file.\n\n"
          "modes (default: a summary):\n"
          "  --tensors           one row per tensor: name, dtype, shape, bytes, file, offset, FP8 scale shape\n"
          "  --stats             per tensor: min, max, mean, std, absmax, NaN and Inf counts\n"
          "                      (FP8 weights dequantised with their block scales)\n"
          "  --check             structure against config.json: expected tensors, shapes, dtypes,\n"
          "                      FP8 scales, index; exit 1 listing every problem\n"
          "  --diff OTHER        compare with another checkpoint (any layout or dtype) tensor by\n"
          "                      tensor, dequantised; exit 1 if anything differs\n"
          "subcommands: summary, tensors, stats, check, diff CKPT OTHER (same as the flags)%s\n"
          "options:\n"
          "  --filter GLOB       only tensors whose name matches GLOB (--tensors, --stats, --diff;\n"
          "                      --diff matches Hugging Face names)\n"
          "  --tolerance REL     --diff: tolerate relative differences |a-b|/max(|a|,|b|) up to REL\n"
          "  --ignore-mtp        --diff: leave out MTP layers (convert.py drops them)\n"
          "  --json              machine-readable output on stdout\n"
          "  --threads N         worker threads (default: all cores)\n"
          "  -q, --quiet         no progress bar or timing line\n"
          "  -h, --help          this help\n"
          "  --version           print the version\n"
          "exit status: 0 ok; 1 problems found, checkpoints differ, or bad input (one line on\n"
          "stderr naming the file); 2 usage error\n",
          dsv3i_cmd_verify ? ", verify" : "");
}

static void usage_error(const char *msg) {
  fprintf(stderr, "%s: error: %s (see --help)\n", DSV3I_PROG, msg);
  exit(2);
}

enum { M_SUMMARY = 1, M_TENSORS, M_STATS, M_CHECK, M_DIFF };

static void set_mode(int *mode, int m) {
  if (*mode && *mode != m) usage_error("choose one of --tensors, --stats, --check, --diff");
  *mode = m;
}

int main(int argc, char **argv) {
  int mode = 0;
  /* subcommands */
  if (argc > 1 && argv[1][0] != '-') {
    static const struct {
      const char *name;
      int mode;
    } sub[] = {{"summary", M_SUMMARY}, {"tensors", M_TENSORS}, {"stats", M_STATS}, {"check", M_CHECK}, {"diff", M_DIFF}};
    if (strcmp(argv[1], "verify") == 0) {
      if (!dsv3i_cmd_verify) usage_error("the verify subcommand is not part of this build");
      return dsv3i_cmd_verify(argc - 1, argv + 1);
    }
    for (size_t i = 0; i < sizeof sub / sizeof sub[0]; i++)
      if (strcmp(argv[1], sub[i].name) == 0) {
        mode = sub[i].mode;
        argv[1] = argv[0];
        argv++;
        argc--;
        break;
      }
  }
  enum { O_TENSORS = 256, O_STATS, O_CHECK, O_DIFF, O_FILTER, O_JSON, O_THREADS, O_VERSION, O_TOL, O_NOMTP };
  static const struct option lo[] = {
      {"tensors", no_argument, 0, O_TENSORS},     {"stats", no_argument, 0, O_STATS},
      {"check", no_argument, 0, O_CHECK},         {"diff", required_argument, 0, O_DIFF},
      {"filter", required_argument, 0, O_FILTER}, {"json", no_argument, 0, O_JSON},
      {"threads", required_argument, 0, O_THREADS}, {"quiet", no_argument, 0, 'q'},
      {"tolerance", required_argument, 0, O_TOL}, {"ignore-mtp", no_argument, 0, O_NOMTP},
      {"help", no_argument, 0, 'h'},              {"version", no_argument, 0, O_VERSION},
      {0, 0, 0, 0}};
  dsv3i_opts o = {0};
  const char *other = NULL;
  int sub_diff = mode == M_DIFF;
  int c;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "qh", lo, NULL)) != -1) {
    switch (c) {
    case O_TENSORS: set_mode(&mode, M_TENSORS); break;
    case O_STATS: set_mode(&mode, M_STATS); break;
    case O_CHECK: set_mode(&mode, M_CHECK); break;
    case O_DIFF:
      set_mode(&mode, M_DIFF);
      if (sub_diff) usage_error("use either `diff CKPT OTHER` or `--diff OTHER CKPT`");
      other = optarg;
      break;
    case O_FILTER: o.filter = optarg; break;
    case O_JSON: o.json = 1; break;
    case O_THREADS:
      if ((o.threads = dsv3i_parse_threads(optarg)) < 0) usage_error("--threads needs a number from 1 to 4096");
      break;
    case O_TOL: {
      char *end;
      o.tolerance = strtod(optarg, &end);
      if (*optarg == 0 || *end || !(o.tolerance >= 0)) usage_error("--tolerance needs a number >= 0");
      break;
    }
    case O_NOMTP: o.ignore_mtp = 1; break;
    case 'q': o.quiet = 1; break;
    case 'h': usage(stdout); return 0;
    case O_VERSION: printf("dsv3-inspect %s\n", DSV3_VERSION); return 0;
    default: dsv3_die_badopt(DSV3I_PROG, argc, argv);
    }
  }
  int npos = argc - optind;
  if (sub_diff) {
    if (npos != 2) usage_error("diff needs two checkpoints: diff CKPT OTHER");
    other = argv[optind + 1];
  } else if (npos != 1) {
    usage_error(npos == 0 ? "no checkpoint given" : "one checkpoint expected");
  }
  if (o.filter && mode != M_TENSORS && mode != M_STATS && mode != M_DIFF)
    usage_error("--filter applies to --tensors, --stats and --diff");
  if ((o.tolerance > 0 || o.ignore_mtp) && mode != M_DIFF) usage_error("--tolerance and --ignore-mtp apply to --diff");
  dsv3_ckpt *ck;
  if (dsv3_ckpt_open(argv[optind], &ck) != 0) {
    dsv3_error_print(DSV3I_PROG);
    return 1;
  }
  int rc;
  switch (mode) {
  case M_TENSORS: rc = dsv3i_tensors(ck, &o); break;
  case M_STATS: rc = dsv3i_stats(ck, &o); break;
  case M_CHECK: rc = dsv3i_check(ck, &o); break;
  case M_DIFF: {
    dsv3_ckpt *ck2;
    if (dsv3_ckpt_open(other, &ck2) != 0) {
      dsv3_error_print(DSV3I_PROG);
      dsv3_ckpt_close(ck);
      return 1;
    }
    rc = dsv3i_diff(ck, ck2, &o);
    dsv3_ckpt_close(ck2);
    break;
  }
  default: rc = dsv3i_summary(ck, &o); break;
  }
  dsv3_ckpt_close(ck);
  fflush(stdout);
  return rc;
}

/* pathcheck: an output file never overwrites one of the command's inputs.
 *
 * Two paths name the same file when they resolve to the same device and inode (stat follows
 * symlinks, so symlinks, "./" and "../" spellings and hard links are all caught). A path that
 * does not exist yet is compared by its canonical spelling (realpath of its folder + its last
 * component). An output is also refused when "<output>.tmp" is an input:
 * the trainer's model folder is built as "DIR.tmp" and swapped in, and versions before the one
 * atomic writer (io/fsutil.h, whose temporary files are unique ".NAME.XXXXXX" names created with
 * O_EXCL, so never an existing input) wrote every file through "<output>.tmp".
 *
 * Errors are SS_EARG with one line naming both options and both paths, e.g.
 *   --out 'x.safetensors' is the same file as --inputs './x.safetensors'; refusing to overwrite an input
 * Call these before doing any work, so that a refused command writes nothing.
 */
#ifndef SS_PATHCHECK_H
#define SS_PATHCHECK_H

/* One input: the option that named it (e.g. "--inputs") and its path (NULL entries skipped). */
typedef struct {
    const char *opt, *path;
} pc_file;

/* Is the output `path` (given with option `opt`) one of the n inputs? SS_OK or SS_EARG. An
 * input that cannot be stat'ed (missing) is skipped: reading it fails on its own. */
int pc_check_output(const char *opt, const char *path, const pc_file *inputs, int n);

/* Is the output `path` one of the files under the folder `dir` (given with `dir_opt`, e.g.
 * "--model") that the command reads? is_input(name, depth) says which files those are (name:
 * the file's own name; depth: 0 for dir itself, 1 for its subfolders...); NULL means every
 * file. Folders are searched up to 8 deep (symlinks followed). SS_OK or SS_EARG. A missing or
 * unreadable folder is skipped: loading it fails on its own. */
int pc_check_output_tree(const char *opt, const char *path, const char *dir_opt, const char *dir,
                         int (*is_input)(const char *name, int depth));

/* The files a model folder's loaders read (sd3_load, pipe_load: a transformer folder or a
 * pipeline folder): at the top, config.json, model_index.json, *.index.json and
 * diffusion_pytorch_model*.safetensors / model*.safetensors (single files and shards); in
 * subfolders (transformer/, text_encoder/, tokenizer/, scheduler/, whose files the model
 * digest covers), every file. Other top-level files (an earlier run's out.safetensors,
 * out.stats.json or image.png) are not the model. */
int pc_is_model_file(const char *name, int depth);

/* Do two outputs name the same file (the second would replace the first)? SS_OK or SS_EARG. */
int pc_check_outputs_differ(const char *opt_a, const char *a, const char *opt_b, const char *b);

/* 1 when the two paths name the same file (as above), else 0. */
int pc_same_file(const char *a, const char *b);

#endif

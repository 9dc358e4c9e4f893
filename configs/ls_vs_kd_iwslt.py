"""Is label smoothing truly incompatible with knowledge distillation? Translation: Shen et al.
(ICLR 2021), IWSLT'14 German-English with Transformers.

Shen et al. train a Transformer teacher with and without label smoothing (e = 0.1) and distil
a student from each with the word-level KD of Tan et al. (ICLR 2019): per target token, the
student matches the teacher's distribution over the vocabulary. Their stated settings: Adam
lr 5e-4, dropout 0.3, weight decay 0, at most 4096 tokens per batch, LS 0.1 for the teachers.
They report BLEU only as curves: the LS teacher's student reaches the higher BLEU. There is no
published number to target, so the rows have none.

Setting (fairseq's IWSLT'14 recipe where Shen et al. are silent; `recipes.translation`):
  data: `iwslt14_de_en`, the files of fairseq's prepare-iwslt14.sh (tokenised, lower-cased,
    10k joint BPE); German to English; batches of at most 4096 tokens (`data.max_tokens`).
  model: `transformer_iwslt_de_en` (fairseq's: 6 + 6 layers, width 512, feed-forward 1024,
    4 heads, shared decoder input and output embeddings, dropout 0.3), teacher and student.
  teachers: cross-entropy, or LS e = 0.1 in fairseq's label_smoothed_cross_entropy convention
    (1 - e on the reference token, e / (V - 1) on each other token: `lsr` with convention
    "others"), averaged over the target tokens.
  students: word-level KD as Tan et al.'s released code computes it (RayeRen/
    multilingual-kd-pytorch, criterion distill_label_smoothed_cross_entropy, with the values
    its run scripts leave at their defaults): per target token,
    `(1 - a) LS_e + a T^2 KL(teacher_K || student_T)` with a = 0.9, T = 0.6 (teacher and
    student tempered alike), the teacher cut to its K = 4 most likely tokens, renormalised
    (`kd.teacher_top_k`; their paper calls this top-K distillation), and the (1 - a) share
    label-smoothed with e = 0.1 in that code's convention, (1 - e) on the reference token and
    e/V on every token (`kd.smoothing`). Shen et al. name the framework but not its settings,
    so these are Tan et al.'s, not confirmed as theirs.
  optimiser: Adam betas (0.9, 0.98), lr 5e-4, inverse square root after 4000 warm-up updates,
    no weight decay, no clipping; 50 epochs (ours: fairseq's README trains until stopped).
  BLEU: beam 5, length penalty 1, at the end of the run on data.eval_split (the test split
    unless set; `validation` is the prepare script's valid set), sacrebleu on the tokenised,
    de-BPE'd text as fairseq-generate --remove-bpe scores it.

Rows (config arguments):
  method=ce | method=lsr          the teachers
  method=kd                       a student (pass either teacher's workdir)
  ...,size=demo                   a first try without IWSLT: transformer_translation_tiny
                                  learns mock_translation's reversal task (BLEU above 90 in 4
                                  epochs, about a minute on 2 CPU cores; `demo`)
  ...,smoke                       three steps of transformer_translation_tiny on
                                  mock_translation

Commands:
  jaxkd train --config configs/ls_vs_kd_iwslt.py:method=lsr,size=demo --workdir /tmp/mt-demo
  bash prepare-iwslt14.sh   # fairseq's examples/translation script, run where it can download
  TFDS_DATA_DIR=DIR jaxkd report run configs/ls_vs_kd_iwslt.py --seeds 0   # DIR holds
      # iwslt14.tokenized.de-en/ (or pass --config.data.data_dir to jaxkd train)
  jaxkd train --config configs/ls_vs_kd_iwslt.py:method=lsr --workdir T_LS \\
      --config.data.data_dir=DIR/iwslt14.tokenized.de-en
  jaxkd train --config configs/ls_vs_kd_iwslt.py:method=kd --workdir S_LS \\
      --config.teacher.workdir=T_LS --config.data.data_dir=DIR/iwslt14.tokenized.de-en

Expected runtime (an estimate, not measured): fairseq trains this model at about 4 minutes an
epoch on one V100; 50 epochs are a few GPU-hours per run, the students more (the teacher's
forward pass), 4 runs per seed.
"""
from jaxkd.config import recipes
from jaxkd.reporting import Claim, Row, Table, parse_arg

_ALLOWED = {"method": ("ce", "lsr", "kd"), "size": ("full", "demo")}
# Tan et al.'s code: DEFAULT_ALPHA 0.9, --distill-temp 0.6, --distill-topk 4 (its defaults),
# --label-smoothing 0.1 (its run script).
KD_ALPHA, KD_TEMPERATURE, KD_TOP_K, KD_SMOOTHING = 0.9, 0.6, 4, 0.1
STUDENT = (f"{1 - KD_ALPHA:.1f} LS {KD_SMOOTHING} + {KD_ALPHA} T^2 KL per token from the "
           f"teacher's top {KD_TOP_K}, T = {KD_TEMPERATURE}")


def get_config(arg=None):
  """One run; ``arg`` is ``method=ce|lsr|kd`` (+ ``,size=demo`` or ``,smoke``)."""
  values, smoke = parse_arg(arg, _ALLOWED)
  config = recipes.row_config({"method": values["method"], "model": "resnet8"})
  recipes.translation(config)
  if values["method"] == "lsr":
    config.method.smoothing, config.method.convention = 0.1, "others"
  elif values["method"] == "kd":
    config.method.alpha, config.method.temperature = KD_ALPHA, KD_TEMPERATURE
    config.method.teacher_top_k, config.method.smoothing = KD_TOP_K, KD_SMOOTHING
    config.method.kl_reduction, config.method.temperature_squared = "batchmean", True
  if values["size"] == "demo":
    return demo(recipes.smoke_translation(config))
  return recipes.smoke_translation(config) if smoke else config


def demo(config):
  """The smoke model and data (`transformer_translation_tiny` reversing 2-7 words of 20) trained
  long enough to learn the task: 4 epochs (500 steps), warm-up 100, lr 2e-3, beam 4."""
  config.train.num_steps, config.train.num_epochs = -1, 4
  config.train.log_every_steps, config.train.checkpoint_every_steps = 100, 100000
  config.train.optimizer.warmup_steps, config.train.optimizer.learning_rate = 100, 2e-3
  config.generate.beam_size, config.generate.max_len_b = 4, 12
  return config


def table():
  """Two Transformer teachers (CE, LS) and a word-level KD student of each."""
  return Table(
      name="ls_vs_kd_iwslt",
      title="LS teachers and word-level KD in translation: Shen et al. (ICLR 2021), IWSLT'14 "
            "de-en",
      description=(
          "transformer_iwslt_de_en teachers trained with CE or LS e = 0.1 (fairseq's "
          f"convention), word-level KD students ({STUDENT}: Tan et al.'s code); "
          "Adam (0.9, 0.98) lr 5e-4, inverse sqrt after 4000 updates, dropout 0.3, 4096 "
          "tokens per batch, 50 epochs; BLEU with beam 5 on the tokenised, de-BPE'd text."),
      teachers=(
          Row("teacher_ce", "method=ce", group="Teachers", note="Transformer, CE"),
          Row("teacher_ls", "method=lsr", group="Teachers",
              note="Transformer, LS e=0.1 (fairseq's e/(V-1))"),
      ),
      rows=tuple(
          Row(f"kd_from_{kind}", "method=kd", teacher=f"teacher_{kind}",
              group="Transformer -> Transformer, word-level KD",
              note=f"{STUDENT}, {kind.upper()} teacher")
          for kind in ("ce", "ls")),
      claims=(
          Claim("Shen et al.: the LS teacher's student reaches the higher BLEU", "kd_from_ls",
                "kd_from_ce", metric="bleu"),
      ))

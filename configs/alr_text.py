"""Adaptive label regularization (ALR, arXiv 1908.05474) on text classification: AG News,
Yahoo Answers and Yelp-Full, the text tasks its abstract reports, with the baselines of
configs/alr_cifar.py (CE, LSR, OLS).

RECONSTRUCTED (docs/METHODS.md section 5): only ALR's abstract is public to us. It says ALR is
tested on these three text sets besides CIFAR and ImageNet, but gives no networks, recipe or
numbers we could check; the objective is the reconstruction of configs/alr_cifar.py (R learned
from misclassified samples, mu 0.9, a 1), and the baselines are those of that table: plain
cross-entropy, uniform label smoothing (e 0.1) and online label smoothing (OLS, code known).
No published values are known for this setting, so the table has no targets. Networks (a
2-block Transformer encoder, a fastText-style bag of words and bigrams, or Kim's CNN), the
tokenizer (a 16k-piece sentencepiece unigram model trained on each training split) and the
recipe (`jaxkd.config.recipes.text_classification`) are our choice.

Rows (config arguments):
  method=ce | lsr | alr | ols                  (LSR: e 0.1, uniform convention)
  data=ag_news_subset | yahoo_answers | yelp_review_full | yelp_polarity_reviews
  model=transformer_text | fasttext_text | cnn_text
  ...,smoke                                    a few steps of fasttext_text on mock_text

Commands:
  jaxkd report run configs/alr_text.py --seeds 0,1,2
  jaxkd train --config configs/alr_text.py:method=alr,data=ag_news_subset --workdir DIR \
      --config.data.data_dir=$TFDS_DATA_DIR

Data (nothing downloads): ag_news_subset and yelp_polarity_reviews prepared for
tensorflow-datasets in array_record format under data.data_dir; yahoo_answers and
yelp_review_full as Zhang et al.'s (2015) CSV release unpacked there
(DATA_DIR/yahoo_answers_csv/train.csv, DATA_DIR/yelp_review_full_csv/train.csv). Without the
Yelp CSVs, data=yelp_polarity_reviews (2 classes, tfds) stands in for Yelp-Full; it is not one
of the table's rows. The first run tokenizes each split into DATA_DIR/jaxkd_text/.

Expected runtime (on one GPU, our estimate): minutes per fasttext_text run; about 20 minutes
(AG News) to an hour (Yahoo Answers) per transformer_text run; tokenizing Yahoo's 1.4M
examples the first time takes a few more minutes on the host.
"""
from jaxkd.config import recipes
from jaxkd.reporting import Row, Table, parse_arg

METHODS = ("ce", "lsr", "alr", "ols")
DATASETS = ("ag_news_subset", "yahoo_answers", "yelp_review_full")
_ALLOWED = {"method": METHODS, "data": DATASETS + ("yelp_polarity_reviews",),
            "model": ("transformer_text", "fasttext_text", "cnn_text")}
_TITLES = {"ag_news_subset": "AG News", "yahoo_answers": "Yahoo Answers",
           "yelp_review_full": "Yelp-Full"}


def get_config(arg=None):
  """One row; ``arg`` is ``method=X[,data=D][,model=M][,smoke]``."""
  values, smoke = parse_arg(arg, _ALLOWED)
  config = recipes.row_config(values)
  recipes.text_classification(config, dataset=values["data"], model=values["model"])
  return recipes.smoke_text(config) if smoke else config


def table():
  """CE, LSR, ALR and OLS with the Transformer encoder on AG News, Yahoo Answers, Yelp-Full."""
  rows = tuple(Row(f"{data}-{m}", f"method={m},data={data}", group=_TITLES[data],
                   note="reconstructed; defaults ours" if m == "alr" else "")
               for data in DATASETS for m in METHODS)
  return Table(
      name="alr_text",
      title="Adaptive label regularization (arXiv 1908.05474) and OLS, text classification",
      description=("ALR RECONSTRUCTED (abstract only); transformer_text, our recipe; no "
                   "published numbers to compare with."),
      rows=rows)

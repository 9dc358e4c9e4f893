"""The tasks layer and the one prediction path (`Trainer.predict`) its evaluators reduce."""
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd import data, models, tasks, teachers
from jaxkd.config import defaults
from jaxkd.train import build


def _config(devices):
  config = defaults.get_config("smoke")
  config.model.name, config.mesh.data = "mlp", devices
  config.train.eval_batch_size = 64  # the 355 digits of the test split: 6 batches, 35 real last
  return config


@pytest.mark.slow
def test_predict_pads_masks_and_sums_over_devices():
  """Top-1, NLL, S and the rows of three classes on 1 and 8 devices agree with one numpy pass
  over the whole split: the padded rows of the last batch count nowhere."""
  chosen = (0, 3, 7)
  results = {}
  for devices in (1, 8):
    trainer = build(_config(devices))
    state = trainer.init_state()
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    results[devices] = trainer.evaluate(
        variables, (tasks.metrics(), tasks.stability(10), tasks.class_rows(chosen)))
  split = trainer.run.eval_data
  out, _ = teachers.apply_model(trainer.run.model, variables,
                                trainer.run.task.preprocess(None, jnp.asarray(split.inputs)),
                                train=False)
  logits, labels = np.asarray(out["logits"], np.float64), split.labels
  log_p = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) \
      - logits.max(1, keepdims=True)
  p = np.exp(log_p)
  spread = np.mean([np.mean(np.sum((p[labels == c] - p[labels == c].mean(0)) ** 2, 1))
                    for c in range(10)])
  keep = np.isin(labels, chosen)
  for numbers, totals in results.values():
    assert int(totals["metrics"]["count"]) == split.num_examples == 355
    assert numbers["top1"] == pytest.approx(np.mean(logits.argmax(1) == labels), abs=1e-9)
    assert numbers["nll"] == pytest.approx(-np.mean(log_p[np.arange(355), labels]), rel=1e-5)
    assert numbers["intra_class_variance"] == pytest.approx(spread, rel=1e-3)
    rows = numbers["class_rows"]
    np.testing.assert_array_equal(rows["labels"], labels[keep])  # in the split's order
    np.testing.assert_allclose(rows["features"], np.asarray(out["features"])[keep], rtol=1e-5,
                               atol=1e-6)


def test_datasets_name_their_task_and_models_their_input():
  assert tasks.of(data.mock(8, num_classes=2)) is tasks.image_classification
  assert tasks.of(data.mock_text(8)) is tasks.text_classification
  assert tasks.of(data.mock_translation(8, seed=0, split="train")) is tasks.translation
  for name in models.names():
    assert tasks.for_input_kind(models.input_kind(name)).input_kind == models.input_kind(name)
  assert models.input_kind("cnn_text") == "token ids"
  assert models.input_kind("transformer_translation_tiny") == "sentence pairs"
  assert models.input_kind("resnet18") == "images"
  with pytest.raises(ValueError, match="task 'audio' is not known; allowed: "
                                       "image_classification, text_classification, translation"):
    tasks.get("audio")

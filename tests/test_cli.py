"""The command line: short runs."""
import logging
import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd.train import defaults, setup


def _learning_rates(*, steps_per_epoch, total_steps, num, **opt_fields):
  """The learning rate of the first ``num`` steps, read off SGD updates of a gradient of 1."""
  opt = defaults.get_config().train.optimizer
  opt.momentum, opt.weight_decay = 0.0, 0.0
  opt.update(opt_fields)
  tx = setup.make_optimizer(opt, steps_per_epoch=steps_per_epoch, total_steps=total_steps)
  params = jnp.zeros(())
  state = tx.init(params)
  rates = []
  for _ in range(num):
    updates, state = tx.update(jnp.ones(()), state, params)
    rates.append(-float(updates))
  return np.array(rates)


def _cosine(step, decay_steps, lr=0.05):
  return 0.5 * lr * (1 + math.cos(math.pi * step / decay_steps))


@pytest.mark.parametrize("total_steps,warmup", [(100, 10), (22, 2), (3, 0)])
def test_warmup_longer_than_a_tenth_of_the_run_is_clipped(total_steps, warmup, caplog):
  with caplog.at_level(logging.WARNING):
    rates = _learning_rates(steps_per_epoch=22, total_steps=total_steps, num=total_steps)
  assert (f"train.optimizer.warmup_epochs=1.0 (22 steps) clipped to {warmup} steps, 10% of this "
          f"{total_steps}-step run") in caplog.text
  expected = [0.05 * t / warmup if t < warmup else _cosine(t - warmup, total_steps - warmup)
              for t in range(total_steps)]
  np.testing.assert_allclose(rates, expected, rtol=1e-6, atol=1e-9)
  assert rates[0] == pytest.approx(0.0 if warmup else 0.05)  # no warm-up left: full rate


def test_warmup_within_a_tenth_of_the_run_is_kept(caplog):
  with caplog.at_level(logging.WARNING):
    rates = _learning_rates(steps_per_epoch=22, total_steps=1000, num=30)
  assert "clipped" not in caplog.text
  np.testing.assert_allclose(rates[[0, 11, 22, 26]],
                             [0.0, 0.025, 0.05, _cosine(4, 1000 - 22)], rtol=1e-6)


def test_negative_warmup_is_rejected():
  with pytest.raises(setup.ConfigError) as err:
    _learning_rates(steps_per_epoch=22, total_steps=100, num=1, warmup_epochs=-0.5)
  assert str(err.value) == "config.train.optimizer.warmup_epochs=-0.5: must be >= 0"



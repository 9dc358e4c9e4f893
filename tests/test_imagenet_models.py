"""torchvision's ImageNet networks: jaxkd's ``*_imagenet`` zoo against torchvision itself.

Reference: torchvision's own models with random weights (BatchNorm scales, shifts and
running statistics random too), in ``eval()`` mode, on the same random images (NCHW there,
NHWC here). Every block type is covered: basic (resnet18), bottleneck (resnet50), grouped
(resnext50_32x4d), wide (wide_resnet50_2), inverted residual (mobilenet_v2) and dense
(densenet121); ``experiments/imagenet_models/check_torchvision.py`` checks all ten.
"""
import collections
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import jaxkd.models as models  # pylint: disable=wrong-import-position
from jaxkd import data as data_lib  # pylint: disable=wrong-import-position
from jaxkd import teachers  # pylint: disable=wrong-import-position
from jaxkd.config import defaults  # pylint: disable=wrong-import-position
from jaxkd.train import run as run_lib  # pylint: disable=wrong-import-position


def randomized(net):
  """``net`` in eval mode with non-trivial BatchNorm affine maps and running statistics."""
  gen = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for module in net.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.weight.copy_(torch.rand(module.weight.shape, generator=gen) * 0.5 + 0.25)
        module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
        module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen) * 0.1)
        module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 1.0)
  return net.eval()


@functools.lru_cache(maxsize=None)
def _torch_net(network):
  torch.manual_seed(0)
  return randomized(getattr(torchvision.models, network)())


def _images(n=2, size=64, seed=2):
  return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _torch_logits(network, x):
  with torch.no_grad():
    return _torch_net(network)(x).numpy()


# XLA's CPU backend without its expensive optimisations: the same numbers, compiled 4-5x
# faster (densenet121: about 4 s instead of 19 s), which is what these one-shot checks need.
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _compiled(fn, *args):
  return jax.jit(fn).lower(*args).compile(compiler_options=_FAST_COMPILE)(*args)


def _apply(name, variables, x, dtype=jnp.float32):
  model = models.get(name, num_classes=1000, dtype=dtype)
  return _compiled(lambda v, x: model.apply(v, x, train=False), variables, x)


def _nhwc(x):
  return jnp.asarray(x.numpy().transpose(0, 2, 3, 1))


@pytest.mark.parametrize("network", ["resnet18", "resnet50", "resnext50_32x4d",
                                     "wide_resnet50_2", "mobilenet_v2", "densenet121"])
@pytest.mark.slow
def test_converted_weights_give_torchvisions_logits(network):
  x = _images()
  expected = _torch_logits(network, x)
  variables = models.from_torchvision(f"{network}_imagenet", _torch_net(network).state_dict())
  out = _apply(f"{network}_imagenet", variables, _nhwc(x))
  assert 0.05 < np.abs(expected).max() < 100  # a real signal, not all zeros
  np.testing.assert_allclose(np.asarray(out["logits"]), expected, rtol=0, atol=1e-4)
  # The features are the pooled final map; the classifier at every position averages to
  # the logits (a linear head after global average pooling).
  np.testing.assert_allclose(out["features"], out["feature_map"].mean(axis=(1, 2)), atol=1e-5)
  np.testing.assert_allclose(out["dense_logits"].mean(axis=(1, 2)), out["logits"], atol=1e-4)


def test_bfloat16_gives_float32_logits_close_to_float32():
  x = _images()
  variables = models.from_torchvision("resnet18_imagenet", _torch_net("resnet18").state_dict())
  reference = _torch_logits("resnet18", x)
  out = _apply("resnet18_imagenet", variables, _nhwc(x), jnp.bfloat16)
  assert {v.dtype for v in out.values()} == {jnp.dtype(jnp.float32)}
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {np.dtype(np.float32)}
  # bfloat16 keeps 8 mantissa bits: a few percent of the logits' range.
  scale = np.abs(reference).max()
  assert np.abs(np.asarray(out["logits"]) - reference).max() < 0.05 * scale
  assert np.corrcoef(np.asarray(out["logits"]).ravel(), reference.ravel())[0, 1] > 0.999


def test_files_convert_like_the_state_dict(tmp_path):
  state = _torch_net("resnet18").state_dict()
  direct = models.from_torchvision("resnet18_imagenet", state)
  torch.save(state, tmp_path / "resnet18.pth")
  from_pth = models.from_torchvision("resnet18_imagenet", str(tmp_path / "resnet18.pth"))
  jax.tree.map(np.testing.assert_array_equal, from_pth, direct)
  safetensors_torch = pytest.importorskip("safetensors.torch")
  safetensors_torch.save_file(state, str(tmp_path / "resnet18.safetensors"))
  from_st = models.from_torchvision("resnet18_imagenet", tmp_path / "resnet18.safetensors")
  jax.tree.map(np.testing.assert_array_equal, from_st, direct)
  # Layouts: conv OIHW -> HWIO, linear (out, in) -> (in, out), BN statistics to batch_stats.
  np.testing.assert_array_equal(direct["params"]["conv1"]["kernel"],
                                state["conv1.weight"].numpy().transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(direct["params"]["fc"]["kernel"], state["fc.weight"].numpy().T)
  np.testing.assert_array_equal(direct["batch_stats"]["layer2_0"]["downsample_1"]["var"],
                                state["layer2.0.downsample.1.running_var"].numpy())


def test_densenet_accepts_the_published_files_old_layer_keys():
  # torchvision's published densenet121 weights name dense layers "norm.1", "conv.2", ...
  state = _torch_net("densenet121").state_dict()
  old = {k.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): v
         for k, v in state.items()}
  assert "features.denseblock1.denselayer1.norm.1.weight" in old
  converted = models.from_torchvision("densenet121_imagenet", old)
  jax.tree.map(np.testing.assert_array_equal, converted,
               models.from_torchvision("densenet121_imagenet", state))


class _NotATensor:  # pickled by reference: torch.load(weights_only=True) must refuse it
  pass


def _resnet18_state():
  return collections.OrderedDict(_torch_net("resnet18").state_dict())


@pytest.mark.parametrize("change, match", [
    (lambda s: s.pop("fc.bias"), r"missing keys: fc\.bias"),
    (lambda s: s.update({"layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1)}),
     r"wrong shapes: layer1\.0\.conv1\.weight \(64, 64, 1, 1\) \(expected \(64, 64, 3, 3\)\)"),
    (lambda s: s.update({"layer5.0.conv1.weight": torch.zeros(1)}),
     r"unexpected keys: layer5\.0\.conv1\.weight"),
    (lambda s: s.update({"fc.weight": "not a tensor"}),
     r"not a flat mapping of names to tensors; entries that are not tensors: fc\.weight"),
])
def test_bad_state_dict_is_refused_naming_file_network_and_keys(tmp_path, change, match):
  state = _resnet18_state()
  change(state)
  path = str(tmp_path / "bad.pth")
  torch.save(state, path)
  with pytest.raises(ValueError, match=match) as err:
    models.from_torchvision("resnet18_imagenet", path)
  assert "bad.pth" in str(err.value)
  if "flat mapping" not in match:
    assert "resnet18 (resnet18_imagenet, 1000 classes)" in str(err.value)


def test_pickled_code_and_other_files_are_refused(tmp_path):
  state = _resnet18_state()
  state["fc.bias"] = _NotATensor()
  torch.save(state, tmp_path / "object.pth")
  with pytest.raises(ValueError, match=r"object\.pth.*refused by torch\.load\(weights_only="):
    models.from_torchvision("resnet18_imagenet", str(tmp_path / "object.pth"))
  torch.save({"model": _resnet18_state(), "epoch": 3}, tmp_path / "training.pth")
  with pytest.raises(ValueError, match=r"training\.pth.*not tensors: epoch, model.*'model'"):
    models.from_torchvision("resnet18_imagenet", str(tmp_path / "training.pth"))
  with pytest.raises(ValueError, match=r"resnet18\.bin.*allowed suffixes are \.pth, \.pt, "):
    models.from_torchvision("resnet18_imagenet", str(tmp_path / "resnet18.bin"))
  with pytest.raises(ValueError, match=r"name='resnet18'.*allowed: densenet121_imagenet"):
    models.from_torchvision("resnet18", _resnet18_state())
  # Another network's weights: the first offending keys are named.
  with pytest.raises(ValueError, match=r"torchvision's resnet34 .*missing keys: layer1\.2\."):
    models.from_torchvision("resnet34_imagenet", _resnet18_state())


def _kd_config(checkpoint, name="resnet18_imagenet", **teacher):
  config = defaults.base_config()
  config.method = ml_collections.ConfigDict({"name": "kd"})
  config.model.name = "small_cnn"
  config.model.cpu_conv = "xla"
  config.train.batch_size = 4
  config.mesh.data = 1
  config.train.eval_batch_size = 4
  config.teacher.torchvision_checkpoint = checkpoint
  config.teacher.torchvision_model = name
  for key, value in teacher.items():
    config.teacher[key] = value
  return config


def _datasets(num_classes=1000, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (8, 64, 64, len(mean)), dtype=np.uint8)
  labels = rng.integers(0, num_classes, 8).astype(np.int32)
  return tuple(data_lib.from_arrays("tiny", split, images, labels, num_classes=num_classes,
                                    mean=mean, std=std) for split in ("train", "test"))


@pytest.mark.slow
def test_kd_run_distils_from_a_torchvision_checkpoint(tmp_path):
  path = str(tmp_path / "resnet18.pth")
  torch.save(_torch_net("resnet18").state_dict(), path)
  train, test = _datasets()
  run = run_lib.build_run(_kd_config(path), datasets=(train, test))
  assert run.teacher.name == "frozen"
  # The student's batch is normalised with the data's constants; the teacher sees it
  # re-normalised with ImageNet's, as torchvision's weights expect.
  pixels = train.images[:2].astype(np.float32) / 255.0
  student_x = (pixels - np.asarray(train.mean, np.float32)) / np.asarray(train.std, np.float32)
  inputs = teachers.TeacherInputs(model=run.model, inputs=jnp.asarray(student_x), student={},
                                  outputs={}, batch={}, load=None, rng=None)
  logits = _compiled(lambda c, x: run.teacher.logits(
      teachers.TeacherState(), c, inputs._replace(inputs=x)).logits,
                     run.teacher.consts, inputs.inputs)
  torch_x = (torch.from_numpy(pixels.transpose(0, 3, 1, 2))
             - torch.tensor(teachers.IMAGENET_MEAN)[:, None, None]) \
      / torch.tensor(teachers.IMAGENET_STD)[:, None, None]
  np.testing.assert_allclose(np.asarray(logits), _torch_logits("resnet18", torch_x.float()),
                             rtol=0, atol=1e-4)


@pytest.mark.parametrize("teacher, match", [
    (dict(checkpoint="weights.bin"),
     r"config\.teacher\.torchvision_checkpoint='.*weights\.bin': allowed: a torchvision "
     r"state_dict file ending in \.pth, \.pt, \.safetensors"),
    (dict(checkpoint="absent.pth"), r"torchvision_checkpoint='.*absent\.pth': no such file"),
    (dict(name="resnet50"),
     r"config\.teacher\.torchvision_model='resnet50': the network of teacher\.torchvision_"
     r"checkpoint; allowed: densenet121_imagenet, .*resnet50_imagenet"),
    # a torchvision checkpoint beside teacher runs is one more member of an ensemble
    (dict(workdir="/tmp/some-run"), r"teacher\.workdir='/tmp/some-run': must be the workdir "
                                    r"of a jaxkd run"),
    (dict(checkpoint=""), r"config\.teacher\.torchvision_model='resnet18_imagenet': needs "
                          r"teacher\.torchvision_checkpoint"),
    (dict(num_classes=10), r"torchvision_checkpoint='.*resnet18\.pth': its resnet18_imagenet "
                           r"classifier has 1000 classes, the student's data 10"),
    (dict(mean=(0.5,), std=(0.2,)), r"RGB images; the student's data has 1 channel"),
])
def test_torchvision_teacher_config_errors(tmp_path, teacher, match):
  path = str(tmp_path / "resnet18.pth")
  if "checkpoint" not in teacher:
    torch.save(_resnet18_state(), path)
  checkpoint = teacher.get("checkpoint", path)
  checkpoint = str(tmp_path / checkpoint) if checkpoint else ""
  datasets = _datasets(num_classes=teacher.get("num_classes", 1000),
                       mean=teacher.get("mean", (0.5, 0.4, 0.3)),
                       std=teacher.get("std", (0.2, 0.25, 0.3)))
  extra = {"workdir": teacher["workdir"]} if "workdir" in teacher else {}
  config = _kd_config(checkpoint, teacher.get("name", "resnet18_imagenet"), **extra)
  with pytest.raises(run_lib.ConfigError, match=match):
    run_lib.build_run(config, datasets=datasets)

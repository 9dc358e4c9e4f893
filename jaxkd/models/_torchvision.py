"""torchvision ``state_dict`` -> jaxkd variables for the ``*_imagenet`` networks.

The Flax modules of ``_imagenet.py`` are named after torchvision's keys with ``.`` written
``_`` (no torchvision module name holds a ``_``), so every variable has exactly one
torchvision key:

* conv ``weight`` [O, I/groups, H, W] -> ``kernel`` [H, W, I/groups, O];
* linear ``weight`` [out, in] -> ``kernel`` [in, out]; ``bias`` -> ``bias``;
* BatchNorm ``weight``/``bias`` -> ``params`` ``scale``/``bias``, ``running_mean``/
  ``running_var`` -> ``batch_stats`` ``mean``/``var``; ``num_batches_tracked`` is skipped.

Files are read without running pickled code: ``torch.load(..., weights_only=True)`` for
``.pth``/``.pt`` and the safetensors package for ``.safetensors``. Anything but a flat
mapping of the named network's keys to tensors of its shapes is refused with a message
naming the file, the network and the first offending keys.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import re
from typing import Any, Mapping, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd.models import _registry

__all__ = ["TORCHVISION_SUFFIXES", "from_torchvision", "read_state_dict", "torchvision_names"]

TORCHVISION_SUFFIXES = (".pth", ".pt", ".safetensors")
# The classifier of each family: its rows are the classes.
_CLASSIFIERS = ("fc.weight", "classifier.1.weight", "classifier.weight")
# torchvision's published DenseNet weights use the old layer keys ``norm.1``, ``conv.2``...;
# torchvision's own loader renames them (``densenet.py``, ``_load_state_dict``).
_OLD_DENSE_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|"
    r"running_var|num_batches_tracked))$")
_FIRST = 5  # offending keys named in a message


def torchvision_names() -> tuple[str, ...]:
  """The ``*_imagenet`` model names a torchvision checkpoint converts to, sorted."""
  return tuple(name for name in _registry.names()
               if name.endswith("_imagenet") and not name.startswith("reactnet"))


def _first(keys) -> str:
  keys = sorted(keys)
  more = f" (and {len(keys) - _FIRST} more)" if len(keys) > _FIRST else ""
  return ", ".join(keys[:_FIRST]) + more


def _is_tensor(value: Any) -> bool:
  return isinstance(value, np.ndarray) or (
      type(value).__module__.startswith("torch") and hasattr(value, "detach"))


def _to_numpy(value: Any) -> np.ndarray:
  if isinstance(value, np.ndarray):
    return value
  value = value.detach().cpu()
  if value.is_floating_point():
    value = value.float()  # bfloat16/float16 have no (or a lossy) numpy path
  return value.numpy()


def read_state_dict(path: str) -> dict:
  """The name -> tensor mapping stored in a ``.pth``/``.pt`` or ``.safetensors`` file.

  ``.pth``/``.pt`` are read with ``torch.load(path, map_location="cpu",
  weights_only=True)``, which unpickles tensors and plain containers only and never runs
  code; ``.safetensors`` with the safetensors package (torch tensors when torch is installed,
  numpy arrays otherwise).

  Raises:
    ValueError: an unknown suffix, a file that is missing, unreadable, or not a flat mapping
      of names to tensors.
    ImportError: torch (or safetensors) is not installed.
  """
  path = os.fspath(path)
  suffix = os.path.splitext(path)[1].lower()
  if suffix not in TORCHVISION_SUFFIXES:
    raise ValueError(f"torchvision checkpoint {path!r}: allowed suffixes are "
                     f"{', '.join(TORCHVISION_SUFFIXES)}")
  if not os.path.isfile(path):
    raise ValueError(f"torchvision checkpoint {path!r}: no such file")
  if suffix == ".safetensors":
    try:
      import safetensors  # pylint: disable=import-outside-toplevel
    except ImportError as err:
      raise ImportError(f"reading {path!r} needs the safetensors package: "
                        "pip install 'jaxkd[torch]'") from err
    framework = "pt" if importlib.util.find_spec("torch") is not None else "np"
    try:
      with safetensors.safe_open(path, framework=framework) as f:
        return _check_flat({key: f.get_tensor(key) for key in f.keys()}, repr(path))
    except Exception as err:  # pylint: disable=broad-except
      raise ValueError(f"torchvision checkpoint {path!r}: not a readable safetensors file "
                       f"({type(err).__name__}: {err})") from None
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as err:
    raise ImportError(f"reading {path!r} needs torch: pip install 'jaxkd[torch]'") from err
  try:
    loaded = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as err:  # pylint: disable=broad-except
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
    raise ValueError(f"torchvision checkpoint {path!r}: refused by torch.load(weights_only="
                     f"True), which loads tensors only ({type(err).__name__}: "
                     f"{first_line})") from None
  return _check_flat(loaded, repr(path))


def _check_flat(loaded: Any, where: str) -> dict:
  """``loaded`` as a dict of name -> tensor, or ValueError naming the offending entries."""
  if not isinstance(loaded, Mapping):
    raise ValueError(f"torchvision checkpoint {where} holds a {type(loaded).__name__}, not a "
                     "state_dict (a mapping of names to tensors)")
  bad = [str(k) for k, v in loaded.items() if not (isinstance(k, str) and _is_tensor(v))]
  if bad:
    hint = ""
    if any(k in loaded for k in ("model", "state_dict")):
      hint = ("; a training checkpoint: save its 'model' (or 'state_dict') entry on its own "
              "first")
    raise ValueError(f"torchvision checkpoint {where} is not a flat mapping of names to "
                     f"tensors; entries that are not tensors: {_first(bad)}{hint}")
  return dict(loaded)


@functools.lru_cache(maxsize=16)
def _expected(name: str, num_classes: int) -> dict:
  """torchvision key -> (collection, flax path, flax shape) for the network ``name``."""
  model = _registry.get(name, num_classes=num_classes)
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
  torch_names = {("params", "kernel"): "weight", ("params", "scale"): "weight",
                 ("params", "bias"): "bias", ("batch_stats", "mean"): "running_mean",
                 ("batch_stats", "var"): "running_var"}
  expected = {}
  for collection, tree in variables.items():
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      keys = [p.key for p in path]
      module = ".".join(k.replace("_", ".") for k in keys[:-1])
      key = f"{module}.{torch_names[(collection, keys[-1])]}"
      expected[key] = (collection, tuple(keys), tuple(leaf.shape))
  return expected


def _torch_shape(flax_shape: tuple) -> tuple:
  if len(flax_shape) == 4:  # HWIO -> OIHW
    return (flax_shape[3], flax_shape[2], flax_shape[0], flax_shape[1])
  if len(flax_shape) == 2:  # (in, out) -> (out, in)
    return (flax_shape[1], flax_shape[0])
  return flax_shape


def _to_flax(array: np.ndarray) -> np.ndarray:
  if array.ndim == 4:
    array = array.transpose(2, 3, 1, 0)
  elif array.ndim == 2:
    array = array.T
  return np.ascontiguousarray(array, dtype=np.float32)


def from_torchvision(name: str, state_dict_or_path: Union[str, os.PathLike, Mapping[str, Any]],
                     *, num_classes: Optional[int] = None) -> dict:
  """jaxkd variables of the network ``name`` from a torchvision ``state_dict``.

  The converted variables give the logits of the torchvision model in ``eval()`` mode on the
  same images, NHWC here where torchvision takes NCHW: normalise the inputs as torchvision's
  weights expect (ImageNet mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225), which is
  what ``jaxkd.data`` uses for ``imagenet2012``).

  Args:
    name: a ``*_imagenet`` model name (`torchvision_names`), e.g. ``"resnet50_imagenet"``
      for ``torchvision.models.resnet50``.
    state_dict_or_path: ``model.state_dict()`` (torch tensors or numpy arrays), or the path of
      a ``.pth``/``.pt`` file (``torch.save(model.state_dict(), path)``, torchvision's
      published weights) or a ``.safetensors`` file.
    num_classes: the classifier width; None takes it from the checkpoint's classifier.

  Returns:
    ``{"params": ..., "batch_stats": ...}`` of float32 numpy arrays for
    ``jaxkd.models.get(name, num_classes=...)``.

  Raises:
    ValueError: ``name`` is not a torchvision network, or the checkpoint is not a flat mapping
      of exactly that network's keys to tensors of its shapes (the message names the file,
      the network and the first offending keys).
  """
  allowed = torchvision_names()
  if name not in allowed:
    raise ValueError(f"from_torchvision: name={name!r} is not a torchvision network; "
                     f"allowed: {', '.join(allowed)}")
  if isinstance(state_dict_or_path, (str, os.PathLike)):
    where = repr(os.fspath(state_dict_or_path))
    state = read_state_dict(state_dict_or_path)
  else:
    where = "(the state_dict given)"
    state = _check_flat(state_dict_or_path, where)
  state = {_OLD_DENSE_KEY.sub(r"\1\2", key): value for key, value in state.items()}
  network = name[:-len("_imagenet")]
  if num_classes is None:
    classifier = next((state[k] for k in _CLASSIFIERS if k in state), None)
    num_classes = int(classifier.shape[0]) if classifier is not None else 1000
  expected = _expected(name, num_classes)
  skipped = {k for k in state if k.endswith(".num_batches_tracked")
             and k[:-len("num_batches_tracked")] + "running_mean" in expected}
  missing = set(expected) - set(state)
  unexpected = set(state) - set(expected) - skipped
  problems = []
  if missing:
    problems.append(f"missing keys: {_first(missing)}")
  if unexpected:
    problems.append(f"unexpected keys: {_first(unexpected)}")
  wrong = [f"{k} {tuple(state[k].shape)} (expected {_torch_shape(expected[k][2])})"
           for k in sorted(set(expected) & set(state))
           if tuple(state[k].shape) != _torch_shape(expected[k][2])]
  if wrong:
    more = f" (and {len(wrong) - _FIRST} more)" if len(wrong) > _FIRST else ""
    problems.append(f"wrong shapes: {', '.join(wrong[:_FIRST])}{more}")
  if problems:
    raise ValueError(f"torchvision checkpoint {where} does not match torchvision's {network} "
                     f"({name}, {num_classes} classes): {'; '.join(problems)}")
  variables: dict = {"params": {}, "batch_stats": {}}
  for key, (collection, path, _) in expected.items():
    node = variables[collection]
    for part in path[:-1]:
      node = node.setdefault(part, {})
    node[path[-1]] = _to_flax(_to_numpy(state[key]))
  return variables

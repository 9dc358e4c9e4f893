"""The PyTorch training step that jaxkd's step is timed against (benchmark use only).

Networks and losses follow the official code:
  * ``resnet18``: Tf-KD ``model/resnet.py`` (yuanli2333/Teacher-free-Knowledge-Distillation,
    the kuangliu CIFAR layout). Its forward also pools three unused feature maps; those dead
    branches are left out (they cost well under 1% of the step).
  * ``small_cnn``: `jaxkd.models` SmallCNN written in PyTorch (conv-BN-ReLU stem, one
    BasicBlock per stage of 32, 64, 128 channels, strides 1, 2, 2, global mean, linear).
  * ``ce``: ``F.cross_entropy``. ``tfkd_reg``: Tf-KD ``loss_kd_regularization`` (alpha 0.1,
    T 20, multiplier 100, correct_prob 0.99, ``nn.KLDivLoss()`` i.e. element-wise mean); its
    per-row Python loop that writes ``correct_prob`` is replaced by one ``scatter_``, which
    only makes PyTorch faster. ``mrkd``: KD from a frozen backup copy of the model in eval
    mode, ``(1-a) CE + a T^2 KL_batchmean`` with a 0.9, T 4, the backup overwritten by
    ``load_state_dict`` every ``refresh_every`` steps (the jaxkd defaults).
  * SGD with momentum 0.9 and weight decay 5e-4 (coupled, as jaxkd's default config).

The step takes example indices into uint8 images held in memory, normalises on the fly and
runs forward, backward and the update, exactly the work of jaxkd's step without augmentation
(PyTorch augments in DataLoader workers, outside the step).
"""
from __future__ import annotations

import copy
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["BasicBlock", "ResNet18", "SmallCNN", "TorchStep", "make_model"]

# Tf-KD's nn.KLDivLoss() reduction 'mean' is the official behaviour being reproduced; PyTorch
# warns about it on every call.
warnings.filterwarnings("ignore", message="reduction: 'mean' divides", category=UserWarning)


class BasicBlock(nn.Module):
  """Tf-KD/kuangliu BasicBlock: 3x3-3x3, projection shortcut with BatchNorm."""

  def __init__(self, in_planes: int, planes: int, stride: int = 1):
    super().__init__()
    self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.shortcut = nn.Sequential()
    if stride != 1 or in_planes != planes:
      self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                    nn.BatchNorm2d(planes))

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    out += self.shortcut(x)
    return F.relu(out)


class ResNet18(nn.Module):
  """Tf-KD CIFAR ResNet18: 3x3 stem, four stages of two BasicBlocks, avg_pool2d(4), linear."""

  def __init__(self, num_classes: int = 100):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    layers, in_planes = [], 64
    for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
      layers += [BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)]
      in_planes = planes
    self.layers = nn.Sequential(*layers)
    self.linear = nn.Linear(512, num_classes)

  def forward(self, x):
    out = self.layers(F.relu(self.bn1(self.conv1(x))))
    out = F.avg_pool2d(out, 4)
    return self.linear(out.view(out.size(0), -1))


class SmallCNN(nn.Module):
  """jaxkd's SmallCNN: stem of widths[0], one BasicBlock per stage, global mean, linear."""

  def __init__(self, num_classes: int = 100, widths=(32, 64, 128), in_channels: int = 3):
    super().__init__()
    self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
    self.bn1 = nn.BatchNorm2d(widths[0])
    blocks, in_planes = [], widths[0]
    for i, width in enumerate(widths):
      blocks.append(BasicBlock(in_planes, width, 1 if i == 0 else 2))
      in_planes = width
    self.blocks = nn.Sequential(*blocks)
    self.linear = nn.Linear(widths[-1], num_classes)

  def forward(self, x):
    out = self.blocks(F.relu(self.bn1(self.conv1(x))))
    return self.linear(out.mean(dim=(2, 3)))


def make_model(name: str, num_classes: int) -> nn.Module:
  """``resnet18`` or ``small_cnn``."""
  factories = {"resnet18": ResNet18, "small_cnn": SmallCNN}
  if name not in factories:
    raise ValueError(f"model={name!r}: the PyTorch side has {', '.join(factories)}")
  return factories[name](num_classes)


def _tfkd_reg(outputs, labels, *, alpha=0.1, temperature=20.0, multiplier=100.0,
              correct_prob=0.99):
  loss_ce = F.cross_entropy(outputs, labels)
  k = outputs.size(1)
  teacher_soft = torch.full_like(outputs, (1 - correct_prob) / (k - 1))
  teacher_soft.scatter_(1, labels[:, None], correct_prob)
  soft = nn.KLDivLoss()(F.log_softmax(outputs, dim=1),
                        F.softmax(teacher_soft / temperature, dim=1)) * multiplier
  return (1.0 - alpha) * loss_ce + alpha * soft


def _kd(outputs, labels, teacher, *, alpha=0.9, temperature=4.0):
  loss_ce = F.cross_entropy(outputs, labels)
  kl = F.kl_div(F.log_softmax(outputs / temperature, dim=1),
                F.softmax(teacher / temperature, dim=1), reduction="batchmean")
  return (1.0 - alpha) * loss_ce + alpha * kl * temperature * temperature


class TorchStep:
  """One method's PyTorch training step over uint8 images held in memory.

  Args:
    model_name: ``resnet18`` or ``small_cnn``.
    method: ``ce``, ``tfkd_reg`` or ``mrkd``.
    images: uint8 ``[N, H, W, C]`` tensor; labels: int64 ``[N]``.
    mean, std: per-channel normalisation in [0, 1] units.
    refresh_every: MrKD's backup refresh period in steps.
    channels_last: run the network in ``torch.channels_last`` memory format.
    device: where the model, the images and the step live (``cpu``, ``cuda``).
    autocast: ``torch.bfloat16`` runs forward and loss under `torch.autocast` (float32
      parameters, as jaxkd's ``model.dtype=bfloat16``); None: float32 throughout.
  """

  def __init__(self, model_name, method, images, labels, mean, std, *, num_classes=100,
               refresh_every=390, channels_last=False, seed=0, device="cpu", autocast=None):
    if method not in ("ce", "tfkd_reg", "mrkd"):
      raise ValueError(f"method={method!r}: the PyTorch side has ce, tfkd_reg, mrkd")
    torch.manual_seed(seed)
    self.device, self.autocast = torch.device(device), autocast
    self.method = method
    self.images, self.labels = images.to(self.device), labels.to(self.device)
    self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
    self.model = make_model(model_name, num_classes).to(self.device,
                                                        memory_format=self.memory_format)
    self.model.train()
    self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9,
                                     weight_decay=5e-4)
    self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
    self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1)
    self.backup = None
    if method == "mrkd":
      self.backup = copy.deepcopy(self.model).eval()
      for p in self.backup.parameters():
        p.requires_grad_(False)
    self.refresh_every, self.steps_done = refresh_every, 0

  def _inputs(self, indices):
    x = self.images[indices].permute(0, 3, 1, 2).float().div_(255.0)
    x = ((x - self.mean) / self.std).contiguous(memory_format=self.memory_format)
    return x, self.labels[indices]

  def step(self, indices: torch.Tensor) -> float:
    """One training step on ``images[indices]``; returns the loss (a host float, so the
    step has finished on the device when it returns)."""
    x, y = self._inputs(indices.to(self.device))
    with torch.autocast(self.device.type, dtype=self.autocast or torch.float32,
                        enabled=self.autocast is not None):
      out = self.model(x)
      if self.method == "ce":
        loss = F.cross_entropy(out, y)
      elif self.method == "tfkd_reg":
        loss = _tfkd_reg(out, y)
      else:
        with torch.no_grad():
          teacher = self.backup(x)
        loss = _kd(out, y, teacher)
    self.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    self.optimizer.step()
    self.steps_done += 1
    if self.backup is not None and self.steps_done % self.refresh_every == 0:
      self.backup.load_state_dict(self.model.state_dict())
    return loss.detach().item()

"""Flax (linen) models by name, faithful to the papers' PyTorch CIFAR definitions.

``get(name, num_classes=K, dtype=...)`` returns a module; ``init(rng, x, train=False)``
on an NHWC batch gives ``{"params", "batch_stats"}``; ``apply`` returns a dict with
``logits`` [N, K], ``features`` [N, D] (classifier input), ``feature_map`` [N, h, w, C]
(last map before global pooling) and ``dense_logits`` [N, h, w, K] (the classifier at
every position, Zipf's LS dense votes), all float32. Parameter counts equal the
originals' for 3-channel inputs. The classes are exported for custom variants.
``get(..., cpu_conv="fast")`` runs the convolutions on CPU in the faster forms of
``_cpu_conv.py`` (`CPU_CONVS`: ``"xla"``, the default, or ``"fast"``).

Text classifiers (`is_text`: ``transformer_text``, ``fasttext_text``, ``cnn_text``) take int32
token ids ``[N, L]`` (0 = padding) instead, need ``get(..., vocab_size=V)``, and return the
same dict with the tokens as an ``[N, L, 1, D]`` map.

Translation models (`is_translation`: ``transformer_iwslt_de_en``, fairseq's architecture,
and ``transformer_translation_tiny``) are `TranslationTransformer`s: ``get(..., num_classes=V_tgt,
vocab_size=V_src)``, inputs ``{"source": [N, S], "target": [N, T]}`` (PAD = 0), outputs
``{"logits": [N, T, V_tgt], "features": [N, T, D]}``; `greedy_search` and `beam_search` decode.

torchvision's ImageNet networks are ``<torchvision name>_imagenet`` (`torchvision_names`,
parameter counts equal torchvision's); `from_torchvision` converts a torchvision
``state_dict`` (or a ``.pth``/``.safetensors`` file of one) into their variables.
``reactnet18_stage1_imagenet`` / ``reactnet18_imagenet`` are ReActNet-18's two training stages
(binary activations; real, then binary weights), not torchvision networks.
"""
from jaxkd.models._cpu_conv import CPU_CONVS
from jaxkd.models._densenet import DenseNet
from jaxkd.models._googlenet import GoogLeNet
from jaxkd.models._imagenet import ImageNetDenseNet, ImageNetMobileNetV2, ImageNetResNet
from jaxkd.models._mobilenetv2 import MobileNetV2, MobileNetV2Half
from jaxkd.models._preact import PreActResNet
from jaxkd.models._reactnet import ReActNet
from jaxkd.models._registry import get, input_kind, is_text, is_translation, names, takes_float64
from jaxkd.models._resnet import CifarResNet, ResNet
from jaxkd.models._resnext import CifarResNeXt
from jaxkd.models._shufflenet import ShuffleNetV1, ShuffleNetV2, ShuffleNetV2TfKD
from jaxkd.models._small import MLP, SmallCNN
from jaxkd.models._text import CNNClassifier, FastTextClassifier, TransformerClassifier
from jaxkd.models._search import beam_search, greedy_search
from jaxkd.models._translation import TranslationTransformer
from jaxkd.models._torchvision import (TORCHVISION_SUFFIXES, from_torchvision, read_state_dict,
                                       torchvision_names)
from jaxkd.models._vgg import VGG
from jaxkd.models._wrn import WideResNet

__all__ = [
    "get", "input_kind", "is_text", "is_translation", "names", "takes_float64", "beam_search",
    "greedy_search", "CPU_CONVS",
    "TORCHVISION_SUFFIXES", "from_torchvision", "read_state_dict", "torchvision_names",
    "CifarResNet", "CifarResNeXt", "CNNClassifier", "DenseNet", "FastTextClassifier",
    "GoogLeNet", "ImageNetDenseNet",
    "ImageNetMobileNetV2", "ImageNetResNet", "MLP", "MobileNetV2",
    "MobileNetV2Half", "PreActResNet", "ReActNet", "ResNet", "ShuffleNetV1", "ShuffleNetV2",
    "ShuffleNetV2TfKD", "SmallCNN", "TransformerClassifier", "TranslationTransformer", "VGG",
    "WideResNet",
]

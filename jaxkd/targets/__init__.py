"""Target transforms: pure, composable builders of the distributions a loss is trained towards.

Each transform is a `TargetTransform(init, update)` pair modelled on optax's gradient
transformations; `chain` composes them, every float hyperparameter may be a schedule
``step -> value``, and stateful transforms (OLS/ALR class matrices, the PS-KD table, RAS-KD
prototypes) update their state inside the compiled step.

Example::

  import jaxkd.targets as targets
  tfkd_reg = targets.chain(targets.uniform_teacher(correct_prob=0.99),
                          targets.soften(temperature=20.0))
  ctx = targets.make_context(labels, logits, step=step)
  q, state = targets.build_targets(tfkd_reg, tfkd_reg.init(num_classes=100), ctx)
"""
from jaxkd.targets._base import (EmptyState, Hyperparam, LearnedTemperature, TargetContext,
                                 TargetTransform, build_targets, chain, gradient_scale,
                                 learned_temperature, make_context, stateless, temperature_at,
                                 value_at)
from jaxkd.targets._labels import (SMOOTHING_CONVENTIONS, label_smoothing, one_hot, soften,
                                   teacher_correction, uniform_teacher)
from jaxkd.targets._online import (ClassMatrixState, adaptive_label_regularization,
                                   online_label_smoothing)
from jaxkd.targets._progressive import (TABLE_DTYPES, ProgressiveState,
                                        progressive_self_knowledge)
from jaxkd.targets._relation import (REPRESENTATIVES, RelationState, class_relation,
                                     class_relation_matrix)
from jaxkd.targets._teacher import (has_teacher, knowledge_adjustment, standardize_logits,
                                    teacher_softmax)
from jaxkd.targets._zipf import dense_votes, min_rank, zipf_targets

__all__ = [
    "REPRESENTATIVES",
    "SMOOTHING_CONVENTIONS",
    "TABLE_DTYPES",
    "ClassMatrixState",
    "EmptyState",
    "Hyperparam",
    "LearnedTemperature",
    "ProgressiveState",
    "RelationState",
    "TargetContext",
    "TargetTransform",
    "adaptive_label_regularization",
    "build_targets",
    "chain",
    "class_relation",
    "class_relation_matrix",
    "dense_votes",
    "gradient_scale",
    "has_teacher",
    "knowledge_adjustment",
    "label_smoothing",
    "learned_temperature",
    "make_context",
    "min_rank",
    "one_hot",
    "online_label_smoothing",
    "progressive_self_knowledge",
    "soften",
    "standardize_logits",
    "stateless",
    "teacher_correction",
    "teacher_softmax",
    "temperature_at",
    "uniform_teacher",
    "value_at",
    "zipf_targets",
]

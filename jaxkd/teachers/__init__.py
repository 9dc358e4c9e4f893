"""Teachers: where the teacher logits of a distillation method come from.

A `Teacher` is a NamedTuple of pure functions (``init``, ``logits``, ``update``) plus optional
host-side hooks; its state is one field of the train state. The training step calls it without
knowing which one it holds, so a new teacher source is a new module here and touches no engine
file. Built in:

* `frozen` / `from_run`: a fixed network (Hinton KD, Tf-KD_self, Re-KD, De-KD, DKD, DIST);
  `from_torchvision`: torchvision's weights of an ImageNet network; `ensemble`: several;
  `bind_cache`: their outputs read from a cache of ``jaxkd cache-teacher`` (``teacher.cache``);
* `learned_temperature`: a teacher with CTKD's trainable temperature;
* `replay`: MrKD's ring of the model's own backups (`ReplayRing`);
* `partner`: CS-KD's same-class partner, the student itself on another example;
* `aux_head`: RAS-KD's jointly trained linear head on the student's features;
* `ema`: a mean teacher, the moving average of the student's weights (our addition).
"""
from jaxkd.teachers._aux_head import aux_head, head_logits, init_head
from jaxkd.teachers._base import (Teacher, TeacherEnv, TeacherInputs, TeacherOutput,
                                  TeacherState, apply_model, keep_state, no_state)
from jaxkd.teachers._cached import (CACHE_KEYS, RESTS, bind_cache, expand, fingerprint,
                                    teacher_key)
from jaxkd.teachers._ema import ema, ema_update
from jaxkd.teachers._frozen import (IMAGENET_MEAN, IMAGENET_STD, checkpoint_steps, ensemble,
                                    from_run, from_torchvision, frozen, load_variables,
                                    renormalize, workdirs)
from jaxkd.teachers._partner import partner
from jaxkd.teachers._temperature import learned_temperature, temperature_of
from jaxkd.teachers._replay import (COMBINES, ReplayRing, init_ring, refresh_ring, replay,
                                    ring_logits)

__all__ = [
    "CACHE_KEYS", "RESTS", "bind_cache", "expand", "fingerprint", "no_state", "teacher_key",
    "COMBINES", "IMAGENET_MEAN", "IMAGENET_STD", "ReplayRing", "Teacher", "TeacherEnv",
    "TeacherInputs", "TeacherOutput", "TeacherState", "apply_model", "aux_head",
    "checkpoint_steps", "ema", "ema_update", "ensemble", "from_run", "from_torchvision",
    "frozen", "head_logits", "init_head", "init_ring", "keep_state", "learned_temperature",
    "load_variables", "partner", "refresh_ring", "renormalize", "replay", "ring_logits",
    "temperature_of", "workdirs",
]

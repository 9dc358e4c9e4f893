"""2-D projection of penultimate features of three classes (Mueller et al., 2019).

Host-side numpy: the projection is for figures, not for the training step.
"""
from typing import NamedTuple, Sequence, Tuple

import numpy as np

__all__ = ["ThreeClassProjection", "project_three_classes"]


class ThreeClassProjection(NamedTuple):
  """Features of three classes projected onto the plane through their templates.

  Attributes:
    points: ``[M, 2]`` plane coordinates of the examples of the three classes.
    labels: ``[M]`` their class ids.
    vertices: ``[3, 2]`` plane coordinates of the three templates (the triangle), in the
      order of ``classes``.
    classes: the three class ids.
  """
  points: np.ndarray
  labels: np.ndarray
  vertices: np.ndarray
  classes: Tuple[int, int, int]


def _check_classes(classes, num_classes):
  classes = tuple(int(c) for c in classes)
  if len(classes) != 3 or len(set(classes)) != 3:
    raise ValueError(f"classes must be 3 distinct class ids, got {classes}.")
  if min(classes) < 0 or max(classes) >= num_classes:
    raise ValueError(f"classes must lie in [0, {num_classes}) (the rows of templates), "
                     f"got {classes}.")
  return classes


def _plane_basis(vertices_3d):
  """Orthonormal basis ``[2, dim]`` of the plane spanned by the triangle's two edges."""
  edge_1 = vertices_3d[1] - vertices_3d[0]
  edge_2 = vertices_3d[2] - vertices_3d[0]
  length_1 = np.linalg.norm(edge_1)
  length_2 = np.linalg.norm(edge_2)
  u_1 = edge_1 / length_1 if length_1 > 0 else edge_1
  residual = edge_2 - (edge_2 @ u_1) * u_1
  # Relative test: templates of trained nets have arbitrary scale.
  if not (length_1 > 0 and np.linalg.norm(residual) > 1e-9 * max(length_1, length_2)):
    raise ValueError("templates of the chosen classes are collinear (or equal): they span "
                     "no plane; choose other classes.")
  return np.stack([u_1, residual / np.linalg.norm(residual)])


def project_three_classes(features, labels, templates,
                          classes: Sequence[int]) -> ThreeClassProjection:
  """Projects examples of 3 classes onto the plane through the 3 class templates.

  Following Mueller, Kornblith and Hinton (2019): "(1) pick three classes, (2) find an
  orthonormal basis of the plane crossing the templates of these three classes, (3) project
  the penultimate layer activations of examples from these three classes onto this plane."
  A template is a row ``w_k`` of the final linear layer (logit ``z_k = w_k . h + b_k``).
  The plane is the affine plane through ``w_a, w_b, w_c``, with origin at their centroid
  and basis ``u_1 = (w_b - w_a) / ||w_b - w_a||`` and ``u_2`` the Gram-Schmidt
  orthonormalisation of ``w_c - w_a`` against ``u_1``; a point h maps to
  ``((h - o) . u_1, (h - o) . u_2)``, and the templates map to the vertices of a triangle
  congruent to the one they form.

  Args:
    features: ``[N, dim]`` penultimate features h (before the final linear layer).
    labels: ``[N]`` integer class ids.
    templates: ``[K, dim]`` final-layer weight rows; a Flax ``nn.Dense`` kernel is
      ``[dim, K]``, so pass ``kernel.T``.
    classes: three distinct class ids ``(a, b, c)``.

  Returns:
    A ``ThreeClassProjection`` (examples of the other classes are dropped).

  References:
    Mueller, Kornblith and Hinton, "When Does Label Smoothing Help?", NeurIPS 2019.
  """
  features = np.asarray(features, np.float64)
  labels = np.asarray(labels)
  templates = np.asarray(templates, np.float64)
  if features.ndim != 2:
    raise ValueError(f"features must have shape [N, dim], got shape {features.shape}.")
  if labels.shape != features.shape[:1]:
    raise ValueError(f"labels must have shape [N]={features.shape[:1]}, got shape "
                     f"{labels.shape}.")
  if templates.ndim != 2 or templates.shape[1] != features.shape[1]:
    raise ValueError(f"templates must have shape [K, dim={features.shape[1]}] (pass a "
                     f"Dense kernel transposed), got shape {templates.shape}.")
  classes = _check_classes(classes, templates.shape[0])
  vertices_3d = templates[list(classes)]
  basis = _plane_basis(vertices_3d)
  origin = vertices_3d.mean(axis=0)
  keep = np.isin(labels, classes)
  return ThreeClassProjection(
      points=(features[keep] - origin) @ basis.T,
      labels=labels[keep],
      vertices=(vertices_3d - origin) @ basis.T,
      classes=classes)

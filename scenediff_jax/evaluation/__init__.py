"""Evaluation with the published protocols, in plain Python: box IoU, AP3D, layout IoU,
L_align, Chamfer and F-score. Consumes prediction and ground-truth arrays; runs no model."""
from scenediff_jax.evaluation.alignment import object_alignment
from scenediff_jax.evaluation.box_iou import box_iou_3d, pairwise_box_iou_3d
from scenediff_jax.evaluation.detection import average_precision, voc_ap
from scenediff_jax.evaluation.evaluator import evaluate
from scenediff_jax.evaluation.shape_metrics import (
                                                    INSTPIFU,
                                                    OCCNET,
                                                    UNIT_BBOX,
                                                    ShapeMetricOptions,
                                                    chamfer_and_fscore,
                                                    mesh_metrics,
)

"""capslib: Capsule Networks with dynamic routing (Sabour, Frosst & Hinton 2017, arXiv 1710.09829).

Shape vocabulary, used in every docstring and shape comment of this package, and the argument
name that holds each size wherever a constructor takes it:

=========  =====================  ==============================================================
symbol     argument               meaning
=========  =====================  ==============================================================
``B``                             batch size
``C,H,W``  ``image_shape``        image channels, height, width (1, 28, 28 for MNIST)
``T``      ``num_types``          primary capsule types (32)
``N_in``   ``in_capsules``        input capsules of a routing layer (1152 = 32 types x 6 x 6)
``D_in``   ``in_dim``             their dimension (8): the primary capsules' dimension
``N_out``  ``out_capsules``       output capsules of a routing layer (``num_classes`` = 10 in CapsNet)
``D_out``  ``out_dim``            their dimension (16): the digit capsules' dimension
``R``      ``routing_iterations`` routing iterations (3)
=========  =====================  ==============================================================

Paper names: ``u_hat`` are the *prediction vectors* ``W_ij u_i`` (``RoutingCaps.prediction_vectors``);
a model's *predictions* are its predicted classes (``CapsNetOutput.predictions``).

Modules, one job each: ``functional`` (squash, losses, label and image checks), ``routing``
(Procedure 1, the readable reference implementation), ``fused_routing`` (the fused implementation
of the same maths, an optimisation), ``layers`` (PrimaryCaps, RoutingCaps and its
``routing_implementation`` switch, Decoder), ``model`` (CapsNet), ``tracing`` (shape tables),
``data`` (MNIST, Fashion-MNIST, shift augmentation, the checked cache), ``utils`` (seeds, devices,
``eval_mode``, atomic writes), ``config`` (``TrainConfig`` and the training command line),
``train`` (``fit``, its steps and its CLI), ``checkpoints`` (what a run saves and resumes from),
``faults`` (a non-finite loss, Ctrl-C and SIGTERM), ``evaluate`` (test accuracy and its CLI),
``pretrained`` (shipped weights, checkpoint files), ``widgets`` (sliders over plotting
functions), ``interpret`` (tensors that explain a trained model: coupling maps, Figure 4's
perturbations), ``routing_stats`` (how far routing moves, measured per iteration, and the
labelled agreement-scaling exploration), ``plots`` (figures of notebooks 01-04), ``plots_trained`` (figures of a trained
model for notebooks 05-08: training curves, confusion matrix, mistakes, coupling maps, Figure 4),
``compiling`` (opt-in ``torch.compile`` with an eager fallback), ``equivariance`` (shift and rotate
digits, measure what a pooled CNN feature and a capsule's pose do: notebook 00), ``diagram`` (the
architecture drawn from ``trace_shapes``), ``plots_why`` (figures of notebook 00), ``routing_lab``
(synthetic prediction vectors for notebook 03's routing lab), ``baselines`` (the paper's baseline
CNN and a small one), ``affine`` (affine transformations for the affNIST-style test set),
``ablation`` (Table 1 measured: variants x seeds, ``python -m capslib.ablation``), ``multimnist``
(overlapping digit pairs as the authors generate them, and the fixed test set), ``robustness``
(accuracy curves under one affine transformation at a time; the shipped CapsNet against the shipped
CNN, ``python -m capslib.robustness``), ``plots_evidence`` (figures of notebook 09: the ablation
beside Table 1, robustness curves, one transformed digit), ``multimnist_study`` (notebook 10's
measurements: accuracy and how routing separates two digits per iteration count, ``python -m
capslib.multimnist_study``), ``plots_multimnist`` (figures of notebook 10: a made pair, Figure 5,
routing on two digits), ``distributed`` (``torchrun`` + ``DistributedDataParallel``: shares of
each batch, one stop decision, rank 0 writes).
"""

from .functional import margin_loss, reconstruction_loss, squash
from .fused_routing import routed_capsules
from .layers import ROUTING_IMPLEMENTATIONS, Decoder, PrimaryCaps, RoutingCaps
from .model import CapsNet, CapsNetOutput
from .pretrained import load_checkpoint, load_pretrained
from .routing import RoutingResult, RoutingStep, dynamic_routing
from .tracing import ShapeTable, trace_shapes
from .utils import eval_mode, get_device, seed_everything

__version__ = "0.1.0"

__all__ = [
    "ROUTING_IMPLEMENTATIONS",
    "CapsNet",
    "CapsNetOutput",
    "Decoder",
    "PrimaryCaps",
    "RoutingCaps",
    "RoutingResult",
    "RoutingStep",
    "ShapeTable",
    "dynamic_routing",
    "eval_mode",
    "get_device",
    "load_checkpoint",
    "load_pretrained",
    "margin_loss",
    "reconstruction_loss",
    "routed_capsules",
    "seed_everything",
    "squash",
    "trace_shapes",
]

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

The house, one room a job (``tests/test_layout.py`` keeps it so: a module imports only its own
room and the rooms listed before it; a plot never imports the trainer)::

    capslib/
      functional.py      squash (Eq. 1), margin loss (Eq. 4), reconstruction loss, input checks
      routing.py         Procedure 1, the readable reference; the table of routing implementations
      routing_algorithms.py  the other routing algorithms (uniform, self-attention, EM), one table
      fused_routing.py   the same maths fused (an optimisation, picked by name)
      layers.py          PrimaryCaps, RoutingCaps, Decoder
      model.py           CapsNet (and CapsuleClassifier, what capsule classifiers share)
      efficient_capsnet.py  Efficient-CapsNet, a small capsule network (Mazzia et al. 2021)
      baselines.py       the paper's baseline CNN and a small one
      pretrained.py      shipped weights and reading checkpoint files
      utils.py           seeds, devices, eval mode, atomic writes, where data lives
      data/              MNIST and Fashion-MNIST from disk, augmentations, affine transforms, MultiMNIST
      evaluation/        the one batched prediction loop, test accuracy, model cards, robustness
      analysis/          shape tracing, coupling maps, routing statistics, equivariance, the routing
                         lab, how routing separates two overlapping digits
      training/          fit and its step, batch sources and hooks, checkpoints, faults, torchrun
      experiments/       Table 1's ablation, the MultiMNIST routing-iteration study, the routing
                         algorithms side by side
      plots/             figures by subject, sliders over them (widgets), kernel-free sliders (scrubbers)
      publish/           the series as a static site
      train.py, evaluate.py, ablation.py, robustness.py, multimnist_study.py, routing_study.py, site.py
                         command lines: ``python -m capslib.<name>``
"""

from .analysis.tracing import ShapeTable, trace_shapes
from .efficient_capsnet import EfficientCapsNet
from .functional import margin_loss, reconstruction_loss, squash
from .fused_routing import routed_capsules
from .layers import Decoder, PrimaryCaps, RoutingCaps
from .model import CapsNet, CapsNetOutput
from .pretrained import load_checkpoint, load_pretrained
from .routing import ROUTING_IMPLEMENTATIONS, RoutingResult, RoutingStep, dynamic_routing
from .routing_algorithms import ROUTING_ALGORITHMS
from .utils import eval_mode, get_device, seed_everything

__version__ = "0.1.0"

__all__ = [
    "ROUTING_ALGORITHMS",
    "ROUTING_IMPLEMENTATIONS",
    "CapsNet",
    "CapsNetOutput",
    "Decoder",
    "EfficientCapsNet",
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

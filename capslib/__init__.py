"""capslib: Capsule Networks with dynamic routing (Sabour, Frosst & Hinton 2017, arXiv 1710.09829).

Shape vocabulary, used in every docstring and shape comment of this package:

=========  ==============================================================
``B``      batch size
``C,H,W``  image channels, height, width (1, 28, 28 for MNIST)
``N_in``   input capsules of a routing layer (1152 = 32 types x 6 x 6 for MNIST)
``N_out``  output capsules (10 digit capsules)
``D_in``   input capsule dimension (8)
``D_out``  output capsule dimension (16)
``R``      routing iterations (3)
=========  ==============================================================

Modules, one job each: ``functional`` (squash, losses), ``routing`` (Procedure 1, the readable
reference), ``fast_routing`` (predictions + routing fused, what the layers run), ``layers``
(PrimaryCaps, RoutingCaps, Decoder), ``model`` (CapsNet), ``tracing`` (shape tables), ``data``
(MNIST, Fashion-MNIST, shift augmentation), ``utils`` (seeds, devices), ``train`` (fit and its
CLI), ``evaluate`` (test accuracy and its CLI), ``pretrained`` (shipped weights, checkpoints),
``widgets`` (sliders over plotting functions), ``plots`` (figures of the notebooks 01-04),
``interpret`` (pictures of a trained model: coupling maps, Figure 4, mistakes), ``compiling``
(opt-in ``torch.compile`` with an eager fallback).
"""

from .fast_routing import routed_capsules
from .functional import margin_loss, reconstruction_loss, squash
from .layers import Decoder, PrimaryCaps, RoutingCaps
from .model import CapsNet, CapsNetOutput
from .pretrained import load_checkpoint, load_pretrained
from .routing import RoutingResult, RoutingStep, dynamic_routing
from .tracing import ShapeTable, trace_shapes
from .utils import get_device, seed_everything

__version__ = "0.1.0"

__all__ = [
    "CapsNet",
    "CapsNetOutput",
    "Decoder",
    "PrimaryCaps",
    "RoutingCaps",
    "RoutingResult",
    "RoutingStep",
    "ShapeTable",
    "dynamic_routing",
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

"""nnsight_lab: look inside and edit any PyTorch model.

Code written for nnsight runs after `import nnsight_lab as nnsight` (its 0.8 names too:
`TransformersModel`, `Envoy`, `NNsightDeprecationWarning`)::

    model = NNsight(net)
    with model.trace(x):
        hidden = model.layer1.output.save()
"""

from __future__ import annotations

import warnings

from .config import CONFIG
from .engine.envoy import Envoy
from .engine.eproperty import eproperty
from .errors import (
    MovedNameWarning,
    NNsightDeprecationWarning,
    NNsightError,
    NNsightWarning,
    NotReachedError,
    OutOfOrderError,
    OutputIndexWarning,
    PolicyError,
    RemoteError,
    SourceNotAvailable,
    TraceSourceError,
    TracingError,
    TracingValueError,
    WireError,
)
from .models import LanguageModel, NNsight, TransformersModel, demo_model
from .models.nnsight import traceable
from .remote import login, status, whoami
from .tracing import save

__all__ = [
    "CONFIG",
    "Envoy",
    "LanguageModel",
    "MovedNameWarning",
    "NNsight",
    "NNsightDeprecationWarning",
    "NNsightError",
    "NNsightWarning",
    "NotReachedError",
    "OutOfOrderError",
    "OutputIndexWarning",
    "PolicyError",
    "RemoteError",
    "SourceNotAvailable",
    "TraceSourceError",
    "TracingError",
    "TracingValueError",
    "TransformersModel",
    "WireError",
    "demo_model",
    "eproperty",
    "login",
    "save",
    "status",
    "traceable",
    "whoami",
]
__version__ = "0.1.0"


def ndif_status() -> dict:
    """Deprecated (nnsight < 0.8): `nnsight_lab.status()`."""
    warnings.warn(
        "ndif_status() is deprecated; use nnsight.status().",
        NNsightDeprecationWarning,
        stacklevel=2,
    )
    return status()


def load_ipython_extension(shell: object) -> None:
    """`%load_ext nnsight_lab`: the `%%trace` cell magic and rich displays of models.

    The Jupyter layer is imported here, not at `import nnsight_lab`, so that scripts
    and model servers do not load the widget libraries.
    """
    from .jupyter import load_ipython_extension as load

    load(shell)

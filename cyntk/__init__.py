"""cyntk: metric neural tangent kernels and metric flows for Calabi-Yau metrics.

Subpackages, in import order (each may import only the ones before it):

* :mod:`cyntk.geometry`    -- cymetric-compatible Calabi-Yau substrate (NumPy).
* :mod:`cyntk.models`      -- Keras 3 metric models and cymetric's losses.
* :mod:`cyntk.kernels`     -- empirical metric-NTK and analytic/geometric kernels.
* :mod:`cyntk.flows`       -- flows driven by frozen kernels (KernelModel), Kähler
  potentials and networks.
* :mod:`cyntk.callbacks`   -- MetricNTKCallback.
* :mod:`cyntk.experiments` -- the paper's experiments as functions.
* :mod:`cyntk.cli`         -- the ``cyntk`` command.

Below them all, :mod:`cyntk._validation` (argument checks) imports nothing
from cyntk. ``tests/test_layering.py`` enforces the order.

Importing :mod:`cyntk` itself is cheap: TensorFlow is imported only by the
subpackages that need it.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

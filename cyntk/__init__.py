"""cyntk: metric neural tangent kernels and metric flows for Calabi-Yau metrics.

Subpackages, in import order (each may import only the ones before it):

* :mod:`cyntk.geometry`   -- cymetric-compatible Calabi-Yau substrate (NumPy).
* :mod:`cyntk.models`     -- Keras 3 metric models and cymetric's losses.
* :mod:`cyntk.kernels`    -- empirical metric-NTK, analytic kernels, KernelModel.
* :mod:`cyntk.callbacks`  -- MetricNTKCallback.
* :mod:`cyntk.experiments` -- the paper's experiments as functions.

Importing :mod:`cyntk` itself is cheap: TensorFlow is imported only by the
subpackages that need it.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

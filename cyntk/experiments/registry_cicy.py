"""Registration of the complete-intersection experiments for ``cyntk reproduce`` (issue 18).

Imported by :mod:`cyntk.experiments.registry`; 'quick' is a few minutes on 2 CPU
cores, 'paper' the sizes of the paper's Figure 4 on every manifold.
"""

from __future__ import annotations

from cyntk.experiments.cicy_study import plot_cicy_fig4, run_cicy_fig4, summarise_cicy_fig4
from cyntk.experiments.runner import Experiment, register

__all__: list[str] = []

register(
    Experiment(
        name="cicyfig4",
        run=run_cicy_fig4,
        plot=plot_cicy_fig4,
        description="Figure 4 beyond the quintic: metric-NTK evolution of the 3x128 gelu multiplicative model "
        "on the bicubic, the tetraquadric and the quintic, with the lazy-regime control and frozen-kernel flows "
        "(empirical NTK at initialisation, Gaussian-FS on the product distance) on the same chart-fixed points",
        scales={
            "quick": dict(manifolds=("bicubic", "quintic"), n_points=6000, epochs=5, lazy_width=1024),
            "paper": dict(
                manifolds=("bicubic", "tetraquadric", "quintic"),
                n_points=100_000,
                epochs=50,
                n_flow=1000,
                flow_steps=50,
                verbose=2,
            ),
        },
        uses_store=True,
        summary=summarise_cicy_fig4,
    )
)

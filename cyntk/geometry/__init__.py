"""cymetric-compatible Calabi-Yau substrate (NumPy only; no TensorFlow import).

Points, charts, pullbacks, Omega, weights, kappa and cymetric dataset files for
hypersurfaces in one projective space, following the conventions page (docs/conventions.md) exactly.
"""

from cyntk.geometry.charts import chart_counts, select_chart
from cyntk.geometry.cicy import CompleteIntersection
from cyntk.geometry.cicy_io import manifold_from_basis
from cyntk.geometry.cicy_manifolds import (
    CICY_MANIFOLDS,
    bicubic,
    generic_cicy,
    multidegree_monomials,
    parse_configuration,
    tetraquadric,
)
from cyntk.geometry.clustering import BatchedFSClustering, birch_clustering, fs_agglomerative, silhouette
from cyntk.geometry.components import (
    component_labels,
    components_from_hermitian,
    hermitian_from_components,
    hermitian_index_tables,
)
from cyntk.geometry.dataset import CYDataset, load_basis, make_dataset, save_basis
from cyntk.geometry.files import (
    CorruptFileError,
    IncompleteFileSetError,
    atomic_write,
    begin_file_set,
    check_file_set,
    finish_file_set,
    read_json,
    read_npz,
    read_pickle,
    remove_stale_temporaries,
)
from cyntk.geometry.hypersurface import (
    MANIFOLDS,
    Hypersurface,
    dwork_quintic,
    fermat_cubic,
    fermat_quartic,
    fermat_quintic,
    get_manifold,
)
from cyntk.geometry.intersection import intersection_tensor, mixed_determinant
from cyntk.geometry.local_coordinates import chart_coordinates, measure_density, points_from_chart
from cyntk.geometry.product_distance import product_fs_distance, product_fs_distance_matrix
from cyntk.geometry.projective import (
    default_distance_threshold,
    fs_distance,
    fs_distance_matrix,
    fs_nearest,
    fubini_study_metric,
    patch_normalise,
    to_complex,
    to_real,
)
from cyntk.geometry.variety import VARIETY_TOL, check_on_variety, relative_residual

__all__ = [
    "BatchedFSClustering",
    "fs_agglomerative",
    "birch_clustering",
    "silhouette",
    "chart_coordinates",
    "points_from_chart",
    "measure_density",
    # projective space
    "to_real",
    "to_complex",
    "patch_normalise",
    "fubini_study_metric",
    "fs_distance",
    "fs_distance_matrix",
    "fs_nearest",
    "default_distance_threshold",
    # hypersurfaces
    "Hypersurface",
    "fermat_quintic",
    "dwork_quintic",
    "fermat_quartic",
    "fermat_cubic",
    "get_manifold",
    "MANIFOLDS",
    # complete intersections in products of projective spaces
    "CompleteIntersection",
    "tetraquadric",
    "bicubic",
    "generic_cicy",
    "multidegree_monomials",
    "parse_configuration",
    "CICY_MANIFOLDS",
    "manifold_from_basis",
    "intersection_tensor",
    "mixed_determinant",
    "product_fs_distance",
    "product_fs_distance_matrix",
    # charts of a dataset
    "chart_counts",
    "select_chart",
    # datasets and cymetric files
    "CYDataset",
    "make_dataset",
    "load_basis",
    "save_basis",
    # points on the variety
    "check_on_variety",
    "relative_residual",
    "VARIETY_TOL",
    # files written as a unit, read with named errors
    "atomic_write",
    "remove_stale_temporaries",
    "begin_file_set",
    "finish_file_set",
    "check_file_set",
    "read_npz",
    "read_json",
    "read_pickle",
    "CorruptFileError",
    "IncompleteFileSetError",
    # metric components
    "hermitian_index_tables",
    "hermitian_from_components",
    "components_from_hermitian",
    "component_labels",
]

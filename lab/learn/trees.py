"""A LightGBM tree ensemble flattened into arrays and evaluated by a compiled kernel.

LightGBM's own ``Booster.predict`` runs at about 0.3 M rows/s on 2 shared
cores for a small model; the learned scorer must score at >= 1 M accesses/s.
``FlatTrees.from_booster`` reads the model's dump (``Booster.dump_model``)
into node arrays, and ``predict_raw`` walks them in a numba kernel with
LightGBM's decision rules (numerical: missing values by the node's missing
type and default direction; categorical: NaN and negative codes go right, a
code in the node's set goes left). ``tests/test_learned.py`` checks the result
against ``Booster.predict``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import prange

from lab.compiled import kernel

MISSING_TYPES = {"None": 0, "Zero": 1, "NaN": 2}
K_ZERO_THRESHOLD = 1e-35  # LightGBM's kZeroThreshold


@dataclass(frozen=True)
class FlatTrees:
    """Nodes of every tree (children >= 0 are nodes, < 0 are leaves ~index), roots per tree, leaf values."""

    feature: np.ndarray  # int64 per node
    threshold: np.ndarray  # float64 per node (numerical splits)
    categorical: np.ndarray  # int64 per node: -1 numerical, else its row in ``category_left``
    default_left: np.ndarray  # bool per node
    missing: np.ndarray  # int64 per node: 0 None, 1 Zero, 2 NaN
    left: np.ndarray  # int64 per node
    right: np.ndarray  # int64 per node
    roots: np.ndarray  # int64 per tree (a negative root is a one-leaf tree)
    leaf_value: np.ndarray  # float64 per leaf
    category_left: np.ndarray  # bool [categorical nodes, largest category + 1]: the codes that go left

    @classmethod
    def from_booster(cls, booster) -> "FlatTrees":
        """Flatten a trained ``lightgbm.Booster`` (one output per row)."""
        dump = booster.dump_model()
        nodes = {k: [] for k in ("feature", "threshold", "categorical", "default_left", "missing", "left", "right")}
        leaves, roots, sets = [], [], []

        def add(node) -> int:
            if "leaf_value" in node and "split_index" not in node:
                leaves.append(float(node["leaf_value"]))
                return ~(len(leaves) - 1)
            index = len(nodes["feature"])
            for values in nodes.values():
                values.append(0)
            nodes["feature"][index] = int(node["split_feature"])
            if node["decision_type"] == "==":
                sets.append([int(c) for c in str(node["threshold"]).split("||")])
                nodes["categorical"][index] = len(sets) - 1
                nodes["threshold"][index] = 0.0
            else:
                nodes["categorical"][index] = -1
                nodes["threshold"][index] = float(node["threshold"])
            nodes["default_left"][index] = bool(node.get("default_left", True))
            nodes["missing"][index] = MISSING_TYPES[node.get("missing_type", "None")]
            nodes["left"][index] = add(node["left_child"])
            nodes["right"][index] = add(node["right_child"])
            return index

        for tree in dump["tree_info"]:
            roots.append(add(tree["tree_structure"]))
        width = max((max(s) for s in sets if s), default=-1) + 1
        category_left = np.zeros((len(sets), max(width, 1)), dtype=np.bool_)
        for row, codes in enumerate(sets):
            category_left[row, codes] = True
        return cls(
            feature=np.asarray(nodes["feature"], np.int64), threshold=np.asarray(nodes["threshold"], np.float64),
            categorical=np.asarray(nodes["categorical"], np.int64),
            default_left=np.asarray(nodes["default_left"], np.bool_), missing=np.asarray(nodes["missing"], np.int64),
            left=np.asarray(nodes["left"], np.int64), right=np.asarray(nodes["right"], np.int64),
            roots=np.asarray(roots, np.int64), leaf_value=np.asarray(leaves, np.float64),
            category_left=category_left)

    def predict_raw(self, matrix: np.ndarray) -> np.ndarray:
        """The sum of the trees' leaf values per row of ``matrix`` (float32 or float64, one column per feature)."""
        out = np.zeros(len(matrix), dtype=np.float64)
        if len(matrix) and len(self.roots):
            _predict(matrix, self.feature, self.threshold, self.categorical, self.default_left, self.missing,
                     self.left, self.right, self.roots, self.leaf_value, self.category_left, out)
        return out


@kernel(parallel=True)
def _predict(matrix, feature, threshold, categorical, default_left, missing, left, right, roots, leaf_value,
             category_left, out):
    n_rows = matrix.shape[0]
    width = category_left.shape[1]
    for i in prange(n_rows):
        total = 0.0
        for t in range(roots.shape[0]):
            node = roots[t]
            while node >= 0:
                value = np.float64(matrix[i, feature[node]])
                row = categorical[node]
                if row >= 0:
                    go_left = False
                    if not np.isnan(value) and value >= 0:
                        code = int(value)
                        go_left = code < width and category_left[row, code]
                else:
                    kind = missing[node]
                    if np.isnan(value) and kind != 2:
                        value = 0.0
                    if (kind == 1 and abs(value) <= 1e-35) or (kind == 2 and np.isnan(value)):
                        go_left = default_left[node]
                    else:
                        go_left = value <= threshold[node]
                node = left[node] if go_left else right[node]
            total += leaf_value[~node]
        out[i] = total

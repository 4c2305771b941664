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

import functools
from dataclasses import dataclass
from typing import Optional

import numpy as np
from numba import prange

from lab.compiled import kernel

MISSING_TYPES = {"None": 0, "Zero": 1, "NaN": 2}
K_ZERO_THRESHOLD = 1e-35  # LightGBM's kZeroThreshold


@dataclass(frozen=True, eq=False)
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
        """The sum of the trees' leaf values per row of ``matrix`` (float32 or float64, one column per feature).

        Trees of depth <= MAX_COMPLETE_DEPTH are walked as complete trees (``CompleteTrees``: a fixed number of
        steps, no pointer chasing); deeper ensembles by the node arrays."""
        out = np.zeros(len(matrix), dtype=np.float64)
        if len(matrix) and len(self.roots):
            complete = self.complete
            if complete is not None:
                matrix = np.ascontiguousarray(matrix)
                _predict_complete(matrix, complete.feature, complete.threshold, complete.categorical,
                                  complete.nan_left, complete.zero_missing, complete.offsets, complete.depths,
                                  complete.leaf_offsets, complete.leaf_value, self.category_left, out)
            else:
                _predict(matrix, self.feature, self.threshold, self.categorical, self.default_left, self.missing,
                         self.left, self.right, self.roots, self.leaf_value, self.category_left, out)
        return out

    @functools.cached_property
    def complete(self) -> Optional["CompleteTrees"]:
        """The ensemble as complete binary trees (None when a tree is deeper than MAX_COMPLETE_DEPTH)."""
        return CompleteTrees.from_flat(self)


MAX_COMPLETE_DEPTH = 12  # a complete tree of this depth holds 4095 nodes and 4096 leaves


@dataclass(frozen=True)
class CompleteTrees:
    """Each tree padded to a complete binary tree of its depth, stored breadth-first (node k's children are
    2k+1 and 2k+2): a row takes exactly ``depth`` steps per tree with no child pointers to chase. A leaf above
    the last level becomes padding nodes that always go left (threshold +inf, NaN left) down to it. Per node
    the missing-value rule is resolved ahead: ``nan_left`` is where a NaN goes (LightGBM's default direction
    for missing type NaN, or the side of 0.0 for missing type None); ``zero_missing`` marks the rare missing
    type Zero (values within 1e-35 of 0 then go the default way)."""

    feature: np.ndarray  # int64 per node
    threshold: np.ndarray  # float64 per node
    categorical: np.ndarray  # int64 per node: -1 numerical, else its row in FlatTrees.category_left
    nan_left: np.ndarray  # bool per node
    zero_missing: np.ndarray  # int8 per node: 1 missing type Zero (then ``default_left`` is nan_left)
    offsets: np.ndarray  # int64 per tree: its first node
    depths: np.ndarray  # int64 per tree
    leaf_offsets: np.ndarray  # int64 per tree: its first leaf
    leaf_value: np.ndarray  # float64 per leaf

    @classmethod
    def from_flat(cls, flat: FlatTrees) -> Optional["CompleteTrees"]:
        def depth(node) -> int:
            return 0 if node < 0 else 1 + max(depth(flat.left[node]), depth(flat.right[node]))

        depths = [depth(int(root)) for root in flat.roots]
        if max(depths, default=0) > MAX_COMPLETE_DEPTH:
            return None
        n_nodes = sum(2**d - 1 for d in depths)
        n_leaves = sum(2**d for d in depths)
        feature = np.zeros(n_nodes, np.int64)
        threshold = np.full(n_nodes, np.inf)
        categorical = np.full(n_nodes, -1, np.int64)
        nan_left = np.ones(n_nodes, np.bool_)
        zero_missing = np.zeros(n_nodes, np.int8)
        leaf_value = np.zeros(n_leaves, np.float64)
        offsets, leaf_offsets = [], []
        node_at, leaf_at = 0, 0
        for root, d in zip(flat.roots, depths):
            offsets.append(node_at)
            leaf_offsets.append(leaf_at)
            stack = [(int(root), 0, 0)]  # (flat node or ~leaf, breadth-first position, level)
            while stack:
                node, position, level = stack.pop()
                if node < 0:  # a leaf: padding (always left) down to the last level
                    while level < d:
                        position, level = 2 * position + 1, level + 1
                    leaf_value[leaf_at + position - (2**d - 1)] = flat.leaf_value[~node]
                    continue
                k = node_at + position
                feature[k] = flat.feature[node]
                categorical[k] = flat.categorical[node]
                kind = flat.missing[node]
                threshold[k] = flat.threshold[node]
                if categorical[k] >= 0:
                    nan_left[k] = False  # NaN and negative codes go right
                elif kind == 2:  # NaN: the default direction
                    nan_left[k] = flat.default_left[node]
                elif kind == 1:  # Zero: NaN counts as 0, 0 goes the default way
                    nan_left[k] = flat.default_left[node]
                    zero_missing[k] = 1
                else:  # None: NaN counts as 0.0
                    nan_left[k] = 0.0 <= flat.threshold[node]
                stack.append((int(flat.left[node]), 2 * position + 1, level + 1))
                stack.append((int(flat.right[node]), 2 * position + 2, level + 1))
            node_at += 2**d - 1
            leaf_at += 2**d
        return cls(feature=feature, threshold=threshold, categorical=categorical, nan_left=nan_left,
                   zero_missing=zero_missing, offsets=np.asarray(offsets, np.int64),
                   depths=np.asarray(depths, np.int64), leaf_offsets=np.asarray(leaf_offsets, np.int64),
                   leaf_value=leaf_value)


@kernel(parallel=True)
def _predict_complete(matrix, feature, threshold, categorical, nan_left, zero_missing, offsets, depths,
                      leaf_offsets, leaf_value, category_left, out):
    n_rows = matrix.shape[0]
    width = category_left.shape[1]
    n_trees = offsets.shape[0]
    block = 256
    for b in prange((n_rows + block - 1) // block):  # blocks of rows: each tree's nodes stay in cache
        start = b * block
        stop = min(start + block, n_rows)
        for t in range(n_trees):
            base = offsets[t]
            d = depths[t]
            leaves = leaf_offsets[t]
            for i in range(start, stop):
                position = 0
                for _ in range(d):
                    k = base + position
                    value = matrix[i, feature[k]]
                    row = categorical[k]
                    if np.isnan(value):
                        go_left = nan_left[k]
                    elif row >= 0:
                        code = int(value)
                        go_left = value >= 0 and code < width and category_left[row, code]
                    elif zero_missing[k] and abs(value) <= K_ZERO_THRESHOLD:
                        go_left = nan_left[k]
                    else:
                        go_left = value <= threshold[k]
                    position = 2 * position + (1 if go_left else 2)
                out[i] += leaf_value[leaves + position - ((1 << d) - 1)]


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

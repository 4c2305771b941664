"""A LightGBM tree ensemble flattened into arrays and evaluated by a compiled kernel.

LightGBM's own ``Booster.predict`` runs at about 0.3 M rows/s on 2 shared
cores for a small model; the learned scorer must score at >= 1 M accesses/s.
``FlatTrees.from_model_text`` reads the model's text (``Booster.model_to_string``,
what a saved model holds) into node arrays with its own parser, checking every
tree (a model file is untrusted input: LightGBM's parser trusts it), and
``predict_raw`` walks them in a numba kernel with
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
    split_gain: np.ndarray  # float64 per node: the loss reduction of its split (feature importances)

    @classmethod
    def from_booster(cls, booster) -> "FlatTrees":
        """Flatten a trained ``lightgbm.Booster`` (one output per row), through its text model
        (``from_model_text``)."""
        return cls.from_model_text(booster.model_to_string(), booster.num_feature())

    @classmethod
    def from_model_text(cls, text: str, n_features: int, feature_names=None) -> "FlatTrees":
        """Parse and check a LightGBM text model (``Booster.model_to_string``) of one output per row for rows of
        ``n_features`` features (named ``feature_names`` when given).

        The text is untrusted (a model file a user hands over): it is read by this parser, never by LightGBM's,
        and every tree is checked before any compiled code walks it (``check_tree``): each split's feature
        below ``n_features``, its decision type and threshold valid, every child a node or leaf of its tree,
        every node and leaf reached exactly once from the root (so no loop), finite leaf values, categorical
        sets within their bounds. ValueError saying what is wrong otherwise."""
        if not isinstance(text, str):
            raise ValueError(f"the model must be LightGBM's text model (str), got {type(text).__name__}")
        lines = text.split("\n")
        if lines[0].strip() != "tree":
            raise ValueError(f"a LightGBM text model starts with the line 'tree', got {lines[0][:60]!r}")
        header, at = _key_values(lines, 1, stop=lambda line: line.startswith("Tree=") or line == "end of trees")
        _check_header(header, n_features, feature_names)
        nodes = {k: [] for k in ("feature", "threshold", "categorical", "default_left", "missing", "left", "right",
                                 "split_gain")}
        leaves, roots, sets = [], [], []
        tree_index = 0
        while True:
            if at >= len(lines):
                raise ValueError("the model ends before its 'end of trees' line")
            line = lines[at].strip()
            if line == "end of trees":
                break
            if line != f"Tree={tree_index}":
                raise ValueError(f"expected 'Tree={tree_index}' or 'end of trees', got {line[:60]!r}")
            if tree_index >= MAX_TREES:
                raise ValueError(f"the model has more than {MAX_TREES:,} trees")
            fields, at = _key_values(lines, at + 1, stop=lambda line: line.startswith("Tree=")
                                     or line == "end of trees")
            tree = check_tree(fields, n_features, f"tree {tree_index}")
            base, leaf_base = len(nodes["feature"]), len(leaves)
            if tree["num_leaves"] == 1:
                roots.append(~leaf_base)
            else:
                roots.append(base)
                for key in ("feature", "threshold", "default_left", "missing", "split_gain"):
                    nodes[key].extend(tree[key])
                nodes["categorical"].extend(-1 if c < 0 else c + len(sets) for c in tree["categorical"])
                for key in ("left", "right"):
                    nodes[key].extend(c + base if c >= 0 else c - leaf_base for c in tree[key])
                sets.extend(tree["category_sets"])
            leaves.extend(tree["leaf_value"])
            tree_index += 1
        width = max((int(codes.max()) + 1 for codes in sets if codes.size), default=1)
        if len(sets) * width > MAX_CATEGORY_CELLS:
            raise ValueError(f"the model's categorical splits span {len(sets):,} sets of up to {width:,} categories, "
                             f"more than {MAX_CATEGORY_CELLS:,} in all")
        category_left = np.zeros((len(sets), width), dtype=np.bool_)
        for row, codes in enumerate(sets):
            category_left[row, codes] = True
        return cls(
            feature=np.asarray(nodes["feature"], np.int64), threshold=np.asarray(nodes["threshold"], np.float64),
            categorical=np.asarray(nodes["categorical"], np.int64),
            default_left=np.asarray(nodes["default_left"], np.bool_), missing=np.asarray(nodes["missing"], np.int64),
            left=np.asarray(nodes["left"], np.int64), right=np.asarray(nodes["right"], np.int64),
            roots=np.asarray(roots, np.int64), leaf_value=np.asarray(leaves, np.float64),
            category_left=category_left, split_gain=np.asarray(nodes["split_gain"], np.float64))

    def importances(self, n_features: int, kind: str) -> np.ndarray:
        """Per feature (``n_features``): the number of splits on it (``"split"``) or their total loss reduction
        (``"gain"``), counting the splits of positive gain, as LightGBM's ``feature_importance``."""
        gain = self.split_gain
        used = gain > 0
        weights = np.ones(int(used.sum())) if kind == "split" else gain[used]
        return np.bincount(self.feature[used], weights=weights, minlength=n_features)[:n_features]

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
MAX_PADDING = 64  # complete trees may hold at most this many times the nodes of the trees they pad


def _depth(flat: FlatTrees, root: int) -> int:
    """Levels of splits below ``root`` (0 for a leaf), without recursion: a model's trees may be deep."""
    deepest, stack = 0, [(root, 0)]
    while stack:
        node, level = stack.pop()
        if node < 0:
            deepest = max(deepest, level)
        else:
            stack.append((int(flat.left[node]), level + 1))
            stack.append((int(flat.right[node]), level + 1))
    return deepest


# Bounds of a model this parser accepts: far above what LightGBM trains for lab (30 trees of 15 leaves), far below
# what would exhaust memory.
MAX_TREES = 100_000
MAX_LEAVES = 131_072  # LightGBM's own limit on num_leaves
MAX_CATEGORY_CELLS = 2**26  # categorical sets x categories, as bools
MODEL_VERSIONS = ("v3", "v4")


def _key_values(lines: list, at: int, stop) -> tuple[dict, int]:
    """``key=value`` lines from ``lines[at]`` up to the first line ``stop`` accepts (blank lines skipped): (a dict,
    the index of that line). ValueError for a line that is not ``key=value`` or a key given twice."""
    fields = {}
    while at < len(lines):
        line = lines[at].strip()
        if stop(line):
            break
        at += 1
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise ValueError(f"line {at} is not key=value: {line[:60]!r}")
        if key in fields:
            raise ValueError(f"line {at} repeats {key!r}")
        fields[key] = value
    return fields, at


def _ints(fields: dict, key: str, where: str, count: Optional[int] = None, low: int = -(2**62),
          high: int = 2**62) -> list:
    try:
        values = [int(v) for v in fields[key].split()]
    except KeyError:
        raise ValueError(f"{where} has no {key!r}") from None
    except ValueError:
        raise ValueError(f"{where}: {key!r} must hold integers, got {fields[key][:60]!r}") from None
    if count is not None and len(values) != count:
        raise ValueError(f"{where}: {key!r} holds {len(values):,} values, {count:,} expected")
    bad = [v for v in values if not low <= v <= high]
    if bad:
        raise ValueError(f"{where}: {key!r} holds {bad[0]}, outside [{low}, {high}]")
    return values


def _floats(fields: dict, key: str, where: str, count: int, finite: bool) -> list:
    try:
        values = [float(v) for v in fields[key].split()]
    except KeyError:
        raise ValueError(f"{where} has no {key!r}") from None
    except ValueError:
        raise ValueError(f"{where}: {key!r} must hold numbers, got {fields[key][:60]!r}") from None
    if len(values) != count:
        raise ValueError(f"{where}: {key!r} holds {len(values):,} values, {count:,} expected")
    bad = [v for v in values if (not np.isfinite(v) if finite else np.isnan(v))]
    if bad:
        raise ValueError(f"{where}: {key!r} holds {bad[0]!r}, {'a finite number' if finite else 'a number'} "
                         "expected")
    return values


def _check_header(header: dict, n_features: int, feature_names) -> None:
    """The model's header: one output per row (one class, one tree per iteration), the cross-entropy objective
    (its scores are a logistic link of the trees' sum, as ``LearnedScorer.predict`` applies it), no averaging,
    and ``n_features`` features (named ``feature_names``)."""
    if header.get("version") not in MODEL_VERSIONS:
        raise ValueError(f"the model's version must be one of {list(MODEL_VERSIONS)}, got {header.get('version')!r}")
    for key, expected in (("num_class", 1), ("num_tree_per_iteration", 1), ("max_feature_idx", n_features - 1)):
        got = _ints(header, key, "the model's header", 1)[0]
        if got != expected:
            raise ValueError(f"the model's {key} is {got}, {expected} expected")
    objective = header.get("objective", "").split()
    if not objective or objective[0] != "cross_entropy":
        raise ValueError(f"the model's objective must be cross_entropy, got {header.get('objective')!r}")
    if "average_output" in header:
        raise ValueError("the model averages its trees (a random forest): not a LearnedScorer model")
    if feature_names is not None and header.get("feature_names", "").split() != list(feature_names):
        raise ValueError("the model's feature_names differ from the features it declares")


def check_tree(fields: dict, n_features: int, where: str) -> dict:
    """One tree of a LightGBM text model, checked (see ``FlatTrees.from_model_text``): its splits (feature,
    threshold, categorical set row or -1, default_left, missing type, split gain, left and right child: >= 0 a
    split of this tree, < 0 the leaf ~child), leaf values and categorical sets (arrays of the codes that go
    left). ValueError naming ``where`` and the field otherwise."""
    num_leaves = _ints(fields, "num_leaves", where, 1, 1, MAX_LEAVES)[0]
    leaf_value = _floats(fields, "leaf_value", where, num_leaves, finite=True)
    if fields.get("is_linear", "0").strip() != "0":
        raise ValueError(f"{where} is a linear tree: not a LearnedScorer model")
    n = num_leaves - 1
    if n == 0:
        return {"num_leaves": 1, "leaf_value": leaf_value}
    num_cat = _ints(fields, "num_cat", where, 1, 0, n)[0]
    feature = _ints(fields, "split_feature", where, n, 0, n_features - 1)
    decision = _ints(fields, "decision_type", where, n, 0, 15)
    left = _ints(fields, "left_child", where, n, -num_leaves, n - 1)
    right = _ints(fields, "right_child", where, n, -num_leaves, n - 1)
    threshold = _floats(fields, "threshold", where, n, finite=False)
    gain = _floats(fields, "split_gain", where, n, finite=False)
    missing = [(d >> 2) & 3 for d in decision]
    if any(m > 2 for m in missing):
        raise ValueError(f"{where}: 'decision_type' holds a missing type other than None, Zero or NaN")
    categorical = []
    for k, d in enumerate(decision):
        if d & 1:
            if not np.isfinite(threshold[k]) or threshold[k] != int(threshold[k]):
                raise ValueError(f"{where}: split {k} is categorical but its threshold {threshold[k]!r} is not the "
                                 "index of a categorical set")
            if not 0 <= int(threshold[k]) < num_cat:
                raise ValueError(f"{where}: split {k} uses categorical set {int(threshold[k])}, the tree has {num_cat}")
            categorical.append(int(threshold[k]))
        else:
            categorical.append(-1)
    category_sets = []
    if num_cat:
        words = _ints(fields, "cat_threshold", where, None, 0, 2**32 - 1)
        bounds = _ints(fields, "cat_boundaries", where, num_cat + 1, 0, len(words))
        if bounds[0] != 0 or bounds[-1] != len(words) or any(b < a for a, b in zip(bounds, bounds[1:])):
            raise ValueError(f"{where}: 'cat_boundaries' must rise from 0 to the {len(words)} words of "
                             "'cat_threshold'")
        if len(words) * 32 > MAX_CATEGORY_CELLS:
            raise ValueError(f"{where}: 'cat_threshold' holds {len(words):,} words, too many categories")
        bits = np.unpackbits(np.asarray(words, np.uint32).view(np.uint8), bitorder="little")
        for a, b in zip(bounds, bounds[1:]):
            category_sets.append(np.flatnonzero(bits[32 * a:32 * b]).astype(np.int64))
    # a tree: the root (split 0) is no one's child, every other split and every leaf is exactly one split's
    # child, and all are reached from the root (so no split is its own ancestor)
    seen = np.zeros(n, np.int64)
    seen_leaf = np.zeros(num_leaves, np.int64)
    for child in (*left, *right):
        if child >= 0:
            seen[child] += 1
        else:
            seen_leaf[~child] += 1
    if seen[0] or (seen[1:] != 1).any() or (seen_leaf != 1).any():
        raise ValueError(f"{where}: its child pointers do not make a tree (a split or leaf that is the child of "
                         "none, or of several, or a child pointing back at the root)")
    reached, stack = 0, [0]
    while stack:
        node = stack.pop()
        reached += 1
        if reached > n:
            break
        stack.extend(c for c in (left[node], right[node]) if c >= 0)
    if reached != n:
        raise ValueError(f"{where}: its child pointers do not make a tree (a loop of splits not reached from the "
                         "root)")
    return {"num_leaves": num_leaves, "leaf_value": leaf_value, "feature": feature, "threshold":
            [0.0 if c >= 0 else t for c, t in zip(categorical, threshold)], "categorical": categorical,
            "default_left": [bool(d & 2) for d in decision], "missing": missing, "split_gain": gain, "left": left,
            "right": right, "category_sets": category_sets}


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
        depths = [_depth(flat, int(root)) for root in flat.roots]
        if max(depths, default=0) > MAX_COMPLETE_DEPTH:
            return None
        n_nodes = sum(2**d - 1 for d in depths)
        if n_nodes > max(2**MAX_COMPLETE_DEPTH, MAX_PADDING * flat.feature.shape[0]):
            return None  # sparse deep trees: padding them would cost far more memory than walking them
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

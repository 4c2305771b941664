"""Studies: parameter grids (models x batch sizes x sequence lengths x phases x weight dtypes x policies x
capacities x buffer models) declared in YAML, run on Dask's distributed scheduler (or serially), resumable,
into a Parquet dataset.

``run_study`` runs one; ``load_study`` reads its dataset; ``gap_to_optimum`` and ``best_policy`` are the
tables its report draws. dask and distributed (``pip install 'lab[cluster]'``) load only when a study runs
on them.
"""

from lab.study.dataset import load_study, study_dataset, study_failures
from lab.study.runner import StudySummary, local_cluster, run_study
from lab.study.spec import StudyError, StudySpec, load_study_spec, parse_study
from lab.study.views import best_policy, gap_to_optimum, one_slice, policy_scoreboard

__all__ = ["StudyError", "StudySpec", "StudySummary", "best_policy", "gap_to_optimum", "load_study",
           "load_study_spec", "local_cluster", "one_slice", "parse_study", "policy_scoreboard", "run_study", "study_dataset", "study_failures"]

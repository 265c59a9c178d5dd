"""Data specs, manifests, patient-level splits and synthetic phantoms."""

from brain_tf.data.load import load_spec
from brain_tf.data.spec import DataSpec, shipped_specs
from brain_tf.data.splits import apply_splits, check_no_leak, save_splits, split_subjects

__all__ = ["DataSpec", "apply_splits", "check_no_leak", "load_spec", "save_splits",
           "shipped_specs", "split_subjects"]

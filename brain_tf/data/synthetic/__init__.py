"""Synthetic brain MRI phantoms: a twin of every dataset layout brain_tf reads.

Write a dataset (the command line's ``brain-tf synth`` calls this)::

    from brain_tf.data.synthetic import LAYOUTS, synthesize
    spec = synthesize("msd_brats", "data/synthetic_brats", subjects=20, seed=0)
    manifest = brain_tf.data.load_spec(spec).manifest()

or get arrays without files::

    s = make_subject(np.random.default_rng(0), shape=(48, 48, 48), spacing=4.0,
                     age=70, sex="F", tumour="high", modalities=("FLAIR", "T1", "T1gd", "T2"))

What a phantom is (details in each module):

- anatomy (:mod:`.anatomy`): structures defined in an atlas frame and drawn on
  any grid: scalp, fat, skull with marrow, face, eyes, sinuses and neck; the
  intracranial CSF; a folded cortical ribbon 2-4 mm thick with white matter in
  every gyrus, interhemispheric and Sylvian fissures; the cerebellum with
  folia over its white matter; brainstem, corpus callosum, fornix, thalami,
  caudate, putamen, pallidum, amygdalae, right/left hippocampi, and lateral
  (with horns), third and fourth ventricles. Subjects differ by size, a smooth
  random deformation, asymmetry, their own folding and a small head pose;
- labels (:mod:`.labels`): every subject carries a fine label map (one label
  per structure, tumour classes included) and the lookups from it to tissue
  class, brain mask and hippocampus side;
- contrast (:mod:`.contrast`): T1, T1gd, T2, FLAIR, PD and DWI per fine label,
  with texture, partial volume, bias field, Rician noise and an intensity
  scale that differs between scanners and subjects;
- tumours (:mod:`.tumour`): enhancing rim, necrotic or solid core, oedema,
  nested as the BraTS labels 0-3, drawn over the same anatomy;
- biology: age thins the cortex, widens sulci and the CSF round the brain,
  enlarges ventricles, changes white matter and shrinks the hippocampi; sex
  sets head and brain size (women ~13 % smaller volume) and skull/face/fat
  features. Each relation has per-subject noise: an oracle knowing the true
  tissue fractions predicts age with a mean absolute error of about 5 years,
  so models can do well but not perfectly;
- realism (:mod:`.realism`): tissue fractions, T1 ratios and cortical
  thickness, computed alike for phantoms and real scans
  (``bench/realism.py`` compares them with the MNI152 template).

Generative relations, their noise and the measured figures are listed in
:mod:`.anatomy`; the layout table in :mod:`.layouts`.
"""

from brain_tf.data.synthetic.anatomy import AnatomyMaps, Anatomy, render_anatomy, sample_anatomy
from brain_tf.data.synthetic.contrast import MODALITIES, Scanner, sample_scanner
from brain_tf.data.synthetic.geometry import Frame, affine_from_axes, grid_axes
from brain_tf.data.synthetic.labels import HIPPOCAMPUS, LABELS, MASK, TISSUE
from brain_tf.data.synthetic.layouts import LAYOUT, LAYOUTS, resolve_grid, synthesize
from brain_tf.data.synthetic.slices import PERSPECTIVES, render_slice
from brain_tf.data.synthetic.subject import (
    Phantom, Subject, make_subject, render_phantom, sample_phantom)
from brain_tf.data.synthetic.tumour import GRADES, Tumour, sample_tumour

__all__ = [
    "Anatomy", "AnatomyMaps", "Frame", "GRADES", "HIPPOCAMPUS", "LABELS", "LAYOUT", "LAYOUTS",
    "MASK", "MODALITIES", "PERSPECTIVES", "Phantom", "Scanner", "Subject", "TISSUE", "Tumour",
    "affine_from_axes", "grid_axes", "make_subject", "render_anatomy", "render_phantom",
    "render_slice", "resolve_grid", "sample_anatomy", "sample_phantom", "sample_scanner",
    "sample_tumour", "synthesize",
]

"""The fine label map of a phantom: one integer per structure, and what each maps to.

Every rendered subject carries ``labels`` (see :data:`LABELS`). The coarser maps
are lookups of it, in one place here:

- :data:`TISSUE`: 0 background, 1 CSF, 2 grey matter, 3 white matter (the
  Cam-CAN tissue labels). Deep grey nuclei, hippocampi, amygdalae and the
  cerebellar cortex are grey matter; the brainstem and corpus callosum white
  matter; tumour tissue is counted as white matter;
- :data:`MASK`: the intracranial (brain) mask, everything inside the dura,
  CSF included;
- :data:`HIPPOCAMPUS`: 1 right, 2 left hippocampus (the ADNI labels).

Structures that look different in some MRI contrast have their own label, so a
generator that gives each label its own random intensity can imitate any scan.
Air inside the head (sinuses, nasal cavity, airway) is background.
"""

from __future__ import annotations

import numpy as np

#: Fine label name -> value; the order is the value order.
LABELS = {
    "background": 0,
    "skin_muscle": 1,         # scalp: skin, galea and temporal muscle
    "fat": 2,                 # subcutaneous and orbital fat
    "skull": 3,               # cortical bone of skull and spine
    "marrow": 4,              # diploe and vertebral marrow
    "eyes": 5,
    "other_head": 6,          # deep face and neck tissue: muscles, tongue, glands
    "dura": 7,
    "extracerebral_csf": 8,   # subarachnoid space, sulci, fissures, cisterns
    "lateral_ventricles": 9,
    "third_fourth_ventricles": 10,
    "cerebral_cortex": 11,
    "cerebral_wm": 12,
    "corpus_callosum": 13,
    "cerebellar_cortex": 14,
    "cerebellar_wm": 15,
    "brainstem": 16,
    "thalamus": 17,
    "caudate": 18,
    "putamen": 19,
    "pallidum": 20,
    "right_hippocampus": 21,
    "left_hippocampus": 22,
    "amygdala": 23,
    "edema": 24,
    "non_enhancing": 25,      # solid non-enhancing tumour
    "necrosis": 26,           # necrotic centre or fluid cyst
    "enhancing": 27,
}
NAMES = tuple(LABELS)
assert list(LABELS.values()) == list(range(len(LABELS)))

(BACKGROUND, SKIN_MUSCLE, FAT, SKULL, MARROW, EYES, OTHER_HEAD, DURA, EXTRA_CSF,
 LATERAL_VENTRICLES, THIRD_FOURTH_VENTRICLES, CORTEX, CEREBRAL_WM, CORPUS_CALLOSUM,
 CEREBELLAR_CORTEX, CEREBELLAR_WM, BRAINSTEM, THALAMUS, CAUDATE, PUTAMEN, PALLIDUM,
 RIGHT_HIPPOCAMPUS, LEFT_HIPPOCAMPUS, AMYGDALA, EDEMA, NON_ENHANCING, NECROSIS,
 ENHANCING) = range(len(LABELS))

#: Labels of the tumour sub-regions, drawn over the healthy anatomy.
TUMOUR_LABELS = (EDEMA, NON_ENHANCING, NECROSIS, ENHANCING)


def _lookup(groups: dict[int, tuple[int, ...]], dtype=np.uint8) -> np.ndarray:
    table = np.zeros(len(LABELS), dtype)
    for value, members in groups.items():
        table[list(members)] = value
    return table


#: Tissue class (0 background, 1 CSF, 2 GM, 3 WM) of each fine label.
TISSUE = _lookup({
    1: (EXTRA_CSF, LATERAL_VENTRICLES, THIRD_FOURTH_VENTRICLES),
    2: (CORTEX, CEREBELLAR_CORTEX, THALAMUS, CAUDATE, PUTAMEN, PALLIDUM, RIGHT_HIPPOCAMPUS,
        LEFT_HIPPOCAMPUS, AMYGDALA),
    3: (CEREBRAL_WM, CORPUS_CALLOSUM, CEREBELLAR_WM, BRAINSTEM) + TUMOUR_LABELS,
})
#: Intracranial (inside the dura) or not, per fine label.
MASK = TISSUE > 0
#: Hippocampus label (1 right, 2 left) of each fine label.
HIPPOCAMPUS = _lookup({1: (RIGHT_HIPPOCAMPUS,), 2: (LEFT_HIPPOCAMPUS,)})

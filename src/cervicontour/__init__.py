"""cervicontour: draft radiotherapy contours for cervical cancer, for clinician review.

Package layout follows the data flow: io → validate → preprocess → model → postprocess →
export → metrics → report → review, with `cohort`, `synth`, `structures` and `rules` beside.
Nothing heavy is imported here.
"""

__version__ = "0.8.0"
